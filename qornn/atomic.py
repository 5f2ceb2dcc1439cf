"""Atomic output directories: fill a hidden sibling temp dir, then rename it into place.

A crash or a bad input never leaves a half-written output; an existing directory is replaced
only with --force, and only after the new one is complete."""

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
    return Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))


def commit_dir(tmp: Path, out) -> None:
    """Replace `out` by the completed temp dir `tmp` (old content removed only after success)."""
    out = Path(out)
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, old / "x")
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


def write_bytes_atomic(path, data: bytes) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
