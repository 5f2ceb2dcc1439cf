"""Regenerate docs/tutorial.md from its own commands: `make tutorial`.

Every ```console block of the page holds lines `$ COMMAND` followed by that command's output.
This script runs the commands in order, in one fresh working directory (so later commands see
the files of earlier ones), with the project's .venv first on PATH, and writes each command's
real standard output back under it. A line `<!-- tutorial: copy PATH -->` copies PATH (relative to
that working directory) into docs/tutorial/ -- the plots the page shows. The page's prose is
never touched. A failing command stops the script and leaves the page as it was.

    .venv/bin/python docs/_tools/tutorial.py [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1]
PAGE = DOCS / "tutorial.md"
ASSETS = DOCS / "tutorial"
CONSOLE = re.compile(r"^```console\n(.*?)^```\n", re.S | re.M)
COPY = re.compile(r"^<!-- tutorial: copy (\S+) -->$", re.M)
COLUMNS = "100"  # fixed terminal width, so that wrapped output does not depend on who regenerates


def run(command: str, cwd: Path, env: dict) -> str:
    print(f"$ {command}", file=sys.stderr, flush=True)
    p = subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"tutorial: `{command}` failed with exit {p.returncode}:\n{p.stdout}{p.stderr}")
    return p.stdout.rstrip("\n")


def regenerate(work: Path) -> str:
    text = PAGE.read_text()
    env = dict(os.environ, COLUMNS=COLUMNS, TQDM_DISABLE="1",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")

    def block(match: re.Match) -> str:
        out = []
        for line in match.group(1).splitlines():
            if line.startswith("$ "):
                out.append(line)
                result = run(line[2:], work, env)
                if result:
                    out.append(result)
        return "```console\n" + "\n".join(out) + "\n```\n"

    text = CONSOLE.sub(block, text)
    ASSETS.mkdir(exist_ok=True)
    for rel in COPY.findall(text):
        shutil.copyfile(work / rel, ASSETS / Path(rel).name)
        print(f"copied {rel} -> {(ASSETS / Path(rel).name).relative_to(DOCS.parent)}", file=sys.stderr)
    return text


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", default=None, help="run in this (new) directory and keep it, instead of a temporary one")
    args = ap.parse_args(argv)
    if args.keep:
        work = Path(args.keep)
        work.mkdir(parents=True)
        text = regenerate(work)
    else:
        with tempfile.TemporaryDirectory(prefix="qornn-tutorial-") as tmp:
            text = regenerate(Path(tmp))
    tmp_page = PAGE.with_name(f".{PAGE.name}.tmp")
    tmp_page.write_text(text)
    tmp_page.replace(PAGE)
    print(f"wrote {PAGE.relative_to(DOCS.parent)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
