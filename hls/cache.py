"""A cache of generated and compiled projects, keyed by artifact content hash + options.

Location: ``$QORNN_CACHE/hls`` if QORNN_CACHE is set, else ``~/.cache/qornn/hls``. The key also
covers the qornn and hls4ml versions and the source of the core (nnet_qornn.h and the layer /
project code), so a change to any of them compiles afresh.

An entry is generated in a temporary directory and renamed into place, then compiled there (the
C-simulation library reads its weights from the absolute path it was compiled in), all under an
exclusive lock on ``.<key>.lock``, so concurrent processes wait for each other instead of
building the same entry twice; an entry counts only once its library is compiled
(csim.library_ready). Misses are generated one by one (hls4ml's Python side is not thread-safe)
and compiled in parallel, one g++ per core. The least recently used entries beyond MAX_ENTRIES
are removed.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from qornn.errors import QornnError

from .csim import build_library, kill_compilers, library_ready
from .options import validate_options
from .project import _as_artifact, generate

_SOURCES = ("templates/nnet_qornn.h", "templates/qornn_stream_driver.cpp", "layer.py", "project.py", "csim.py")
MAX_ENTRIES = 64


def cache_root() -> Path:
    base = os.environ.get("QORNN_CACHE")
    root = Path(base).expanduser() if base else Path.home() / ".cache" / "qornn"
    return root / "hls"


def _source_hash() -> str:
    h = hashlib.sha256()
    here = Path(__file__).parent
    for rel in _SOURCES:
        h.update(rel.encode() + (here / rel).read_bytes())
    return h.hexdigest()


def cache_key(art, opts) -> str:
    import hls4ml

    from qornn import __version__

    payload = {"artifact": art.content_hash(), "options": opts.as_dict(), "qornn": __version__,
               "hls4ml": hls4ml.__version__, "source": _source_hash()}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]


def _ready(entry: Path) -> bool:
    try:
        return entry.is_dir() and library_ready(entry)
    except (OSError, QornnError):
        return False


@contextlib.contextmanager
def _locked(paths):
    """Exclusive flock on each path, taken in sorted order (no deadlock between processes)."""
    files = []
    try:
        for p in sorted(set(paths)):
            f = open(p, "a+")
            files.append(f)
            fcntl.flock(f, fcntl.LOCK_EX)
        yield
    finally:
        for f in files:
            fcntl.flock(f, fcntl.LOCK_UN)
            f.close()


def cached_projects(specs, workers: int | None = None) -> list[Path]:
    """Compiled projects for [(artifact, options dict), ...] (options: write_project's keywords
    except out_dir and force), building the misses."""
    root = cache_root()
    todo, entries = {}, []
    for art, options in specs:
        art = _as_artifact(art)
        opts = validate_options(art, **options)
        entry = root / cache_key(art, opts)
        entries.append(entry)
        if not _ready(entry) and entry not in todo:
            todo[entry] = (art, opts)
    if todo:
        root.mkdir(parents=True, exist_ok=True)
        with _locked([root / f".{e.name}.lock" for e in todo]):
            todo = {e: v for e, v in todo.items() if not _ready(e)}  # built meanwhile by someone else
            for entry, (art, opts) in todo.items():
                shutil.rmtree(entry, ignore_errors=True)  # a partial entry (e.g. compile interrupted)
                tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.tmp-{os.getpid()}-", dir=root))
                try:
                    generate(art, opts, tmp, entry)
                    os.replace(tmp, entry)
                finally:
                    shutil.rmtree(tmp, ignore_errors=True)
            n = workers or max(1, min(len(todo), os.cpu_count() or 1))
            try:
                with ThreadPoolExecutor(max_workers=n) as pool:
                    futures = [pool.submit(build_library, e) for e in todo]
                    try:
                        for f in futures:
                            f.result()
                    except BaseException:   # a Ctrl-C or a failed compile: stop the other g++ too
                        for f in futures:
                            f.cancel()
                        kill_compilers()
                        raise
            except BaseException:
                for entry in todo:          # no entry stays half-built
                    if not _ready(entry):
                        shutil.rmtree(entry, ignore_errors=True)
                raise
        prune(root, keep=set(entries))
    for entry in entries:
        with contextlib.suppress(OSError):
            os.utime(entry)  # most recently used: kept longest by prune()
    return entries


def cached_project(art, **options) -> Path:
    """Path of a generated and compiled project for `art` with `options`, built on a cache miss."""
    return cached_projects([(art, options)])[0]


def prune(root: Path, keep=(), max_entries: int = MAX_ENTRIES) -> None:
    """Remove the least recently used entries beyond `max_entries`, and temporary directories
    left by interrupted builds (older than an hour)."""
    now = time.time()
    entries = []
    for p in root.iterdir():
        try:
            mtime = p.stat().st_mtime
        except OSError:
            continue
        if p.name.startswith("."):
            if ".tmp-" in p.name and now - mtime > 3600:
                shutil.rmtree(p, ignore_errors=True)
        elif p.is_dir():
            entries.append((mtime, p))
    entries.sort(reverse=True)
    for _, old in entries[max_entries:]:
        if old not in keep:
            shutil.rmtree(old, ignore_errors=True)
