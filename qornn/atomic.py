"""Atomic output directories: fill a hidden sibling temp dir, then rename it into place.

A crash or a bad input never leaves a half-written output; an existing directory is replaced
only with --force, and only after the new one is complete. Temp names carry the writer's pid
(`.NAME.tmp-PID-xxxx`), so the next writer removes those whose process died (SIGKILL, power)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from qornn.errors import QornnError


def prepare_dir(out, force: bool = False, marker: str | None = None) -> Path:
    """Check that `out` may be (re)written and return a fresh temp dir beside it."""
    out = Path(out)
    if out.exists():
        if not out.is_dir():
            raise QornnError(f"output path {out} exists and is not a directory")
        if any(out.iterdir()) and not force:
            what = "an earlier output" if marker and (out / marker).exists() else "other files"
            raise QornnError(f"output directory {out} already holds {what}; pass --force to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(out)
    return Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-{os.getpid()}-", dir=out.parent))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale(out) -> list[Path]:
    """Remove the temp siblings of `out` left by dead processes; returns what was removed."""
    out = Path(out)
    removed = []
    if not out.parent.is_dir():
        return removed
    for kind in ("tmp", "old"):
        for p in out.parent.glob(f".{glob_escape(out.name)}.{kind}-*"):
            pid = p.name[len(out.name) + len(kind) + 3:].split("-", 1)[0]
            if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
                removed.append(p)
    return removed


def glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def commit_dir(tmp: Path, out) -> None:
    """Replace `out` by the completed temp dir `tmp` (old content removed only after success)."""
    out = Path(out)
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-{os.getpid()}-", dir=out.parent))
        os.replace(out, old / "x")
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


def write_bytes_atomic(path, data: bytes) -> None:
    path = Path(path)
    clean_stale(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-{os.getpid()}-", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes it 0600; a written output follows the umask
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
