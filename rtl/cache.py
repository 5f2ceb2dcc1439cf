"""A cache of Verilator builds, keyed by the content of what is built.

Location: ``$QORNN_CACHE/rtl`` (default ``~/.cache/qornn/rtl``). The key hashes the generated
Verilog itself (a function of the artifact's content hash, the options and the generator's
source), the harness, the Verilator version, its options and the make flags, so any change builds
afresh.
Same pattern as qornn.hls.cache: an exclusive flock per entry, build in a temporary directory,
atomic rename, least recently used entries beyond MAX_ENTRIES pruned.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from qornn.hls.cache import _locked, prune

from .verilator import build, build_key

MAX_ENTRIES = 48
EXE = "obj/harness"


def cache_root() -> Path:
    base = os.environ.get("QORNN_CACHE")
    root = Path(base).expanduser() if base else Path.home() / ".cache" / "qornn"
    return root / "rtl"


def cached_build(verilog: str, meta: dict) -> Path:
    """The harness executable for this Verilog, built on a miss."""
    root = cache_root()
    key = build_key(verilog, meta)
    entry = root / key
    if not (entry / EXE).is_file():
        root.mkdir(parents=True, exist_ok=True)
        with _locked([root / f".{key}.lock"]):
            if not (entry / EXE).is_file():
                shutil.rmtree(entry, ignore_errors=True)
                tmp = Path(tempfile.mkdtemp(prefix=f".{key}.tmp-", dir=root))
                try:
                    build(verilog, meta, tmp)
                    os.replace(tmp, entry)
                finally:
                    shutil.rmtree(tmp, ignore_errors=True)
        prune(root, keep={entry}, max_entries=MAX_ENTRIES)
    with contextlib.suppress(OSError):
        os.utime(entry)
    return entry / EXE
