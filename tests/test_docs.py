"""The documentation site: it builds in strict mode without a network (broken links or anchors,
a missing API object, a bad include all fail), its CLI reference is `qornn COMMAND --help`, and
the commands the pages show still parse."""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOLS = ROOT / "docs" / "_tools"
QORNN = Path(sys.executable).parent / "qornn"


def _tool(name: str):
    """A module of docs/_tools (MkDocs loads them from there; they are not part of the package)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, TOOLS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(f"the docs build tried to reach the network: {args[:2]}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def test_site_builds_strict_and_offline(tmp_path, no_network):
    from mkdocs.commands.build import build
    from mkdocs.config import load_config

    site = tmp_path / "site"
    cfg = load_config(str(ROOT / "mkdocs.yml"), site_dir=str(site), strict=True)
    cfg.plugins.on_startup(command="build", dirty=False)
    try:
        build(cfg)  # raises Abort on any warning (strict)
    finally:
        cfg.plugins.on_shutdown()

    cli = (site / "reference" / "cli.html").read_text()
    reference = _tool("site_reference")
    for name in reference.subcommands(__import__("qornn.cli").cli.build_parser()):
        assert f"usage: qornn {name}" in cli
    api = (site / "reference" / "api.html").read_text()
    for _, module, members in reference.api_sections():
        for member in members or []:
            assert f'id="{module}.{member}"' in api, f"{module}.{member} missing from the API page"
    assert (site / "tutorial.html").is_file() and (site / "spec.html").is_file()
    # the site works offline too: no page loads a script, style sheet, font or image from elsewhere
    external = re.compile(r'<(?:script|link|img)\b[^>]*\b(?:src|href)="(?:https?:)?//', re.I)
    offenders = [p.name for p in site.rglob("*.html") if external.search(p.read_text())]
    assert not offenders, f"pages loading remote assets: {offenders}"


def test_cli_page_is_the_help_of_every_command():
    from qornn.cli import build_parser

    reference = _tool("site_reference")
    page = reference.cli_page()
    commands = [None, *reference.subcommands(build_parser())]
    assert "train" in commands and "hls" in commands
    env = dict(os.environ, COLUMNS=str(reference.CLI_COLUMNS))
    for command in commands:
        argv = [str(QORNN)] + ([command] if command else []) + ["--help"]
        shown = subprocess.run(argv, env=env, capture_output=True, text=True, check=True).stdout
        assert f"```text\n{shown.rstrip()}\n```" in page, f"CLI page differs from {' '.join(argv[1:])}"
    assert page.count("\n## `qornn") == len(commands)


def _shown_commands():
    """`qornn ...` command lines in README.md and the site's own pages (console and bash blocks)."""
    files = [ROOT / "README.md", ROOT / "docs" / "index.md", ROOT / "docs" / "getting-started.md",
             ROOT / "docs" / "tutorial.md", *sorted((ROOT / "docs" / "guide").glob("*.md"))]
    for path in files:
        for block in re.findall(r"^```(?:bash|console)\n(.*?)^```", path.read_text(), re.S | re.M):
            for line in block.replace("\\\n", " ").splitlines():   # a shell line continuation joins lines
                line = line.removeprefix("$ ").split(" #")[0].strip()
                if line.startswith("qornn "):
                    yield path.name, line


def test_commands_shown_in_the_docs_parse():
    from qornn.cli import build_parser

    shown = list(_shown_commands())
    assert len(shown) > 10
    for where, line in shown:
        try:
            build_parser().parse_args(shlex.split(line)[1:])
        except SystemExit:
            pytest.fail(f"{where}: `{line}` no longer parses")


def test_include_takes_a_section_and_rebases_its_links():
    inc = _tool("site_include")
    src = ("# Title\n\nintro [spec](spec.md)\n\n## A (`--x`)\n\ntext [h](hardware.md#types) [self](#b)\n"
           "```\n## not a heading\n```\n### sub\n\nmore\n\n## B\n\nother\n")
    pages = {"guide.md": src, "../README.md": "# r\n\nsee [the spec](docs/spec.md)\n\n## Next\n"}

    def expand(md, page="guide/x.md"):
        return inc.expand(md, page, pages.__getitem__, lambda c: f"<help {c}>")

    out = expand("<!-- include: ../guide.md#a-x -->\n<!-- cli: train -->\n")
    assert "## A (`--x`)" in out and "## not a heading" in out and "### sub" in out and "other" not in out
    assert "(../hardware.md#types)" in out and "(../guide.md#b)" in out and "[guide.md](../guide.md#a-x)" in out
    assert "<help train>" in out
    intro = expand("<!-- include: ../guide.md#title -->\n")
    assert "intro [spec](../spec.md)" in intro and "# Title" not in intro and "## A" not in intro
    assert "[the spec](spec.md)" in expand("<!-- include: ../README.md#r -->\n", "index.md")
    for bad in ("<!-- include: ../guide.md#nope -->\n", "<!-- include: ../missing.md#a -->\n"):
        with pytest.raises(inc.IncludeError):
            inc.expand(bad, "guide/x.md", lambda p: pages[p] if p in pages else open("/nonexistent"), str)


def test_api_page_lists_a_module_only_when_it_is_importable():
    reference = _tool("site_reference")
    page = reference.api_page()
    assert "::: qornn.train.model" in page and "::: qornn.hls" in page
    assert ("::: qornn.rtl" in page) == reference.importable("qornn.rtl")
    assert not reference.importable("qornn.no_such_stage.sub")
