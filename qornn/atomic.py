"""Atomic outputs: fill a hidden sibling temp dir (or file), then move it into place.

Guarantees, for every output qornn writes:

* a crash, a Ctrl-C or a bad input never leaves a half-written output: the new content becomes
  visible in one rename, and a failed command removes its temp;
* an existing output is replaced only with --force, and never by a path that is one of the
  command's own inputs (`refuse_overlap`);
* `--force` never has a moment where a crash loses both the old and the new output: on Linux the
  two directories are swapped with one ``renameat2(RENAME_EXCHANGE)``; elsewhere a journal file
  records the two renames and the next qornn run that touches the same output completes (or
  rolls back) an interrupted replacement (`recover`);
* temp dirs of processes that died (SIGKILL) are removed by the next run: their names carry the
  pid of the process that made them (`clean_stale`);
* new files and directories get the user's umask (tempfile makes them private: 0600 / 0700).
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import shutil
import stat
import tempfile
from pathlib import Path

from qornn.errors import QornnError

_TMP, _OLD, _JOURNAL = ".tmp-", ".old-", ".replace-journal"


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def apply_umask(path, is_dir: bool | None = None) -> None:
    """Give `path` the permissions a plain open()/mkdir() would have under the current umask."""
    path = Path(path)
    if is_dir is None:
        is_dir = path.is_dir()
    os.chmod(path, (0o777 if is_dir else 0o666) & ~_umask())


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _temp_name(name: str, kind: str) -> str:
    return f".{name}{kind}{os.getpid()}-"


def clean_stale(out) -> None:
    """Remove temp dirs/files beside `out` left by dead qornn processes (pid in the name)."""
    out = Path(out)
    parent = out.parent if str(out.parent) else Path(".")
    try:
        entries = list(parent.iterdir())
    except OSError:
        return
    for kind in (_TMP, _OLD):
        prefix = f".{out.name}{kind}"
        for p in entries:
            if not p.name.startswith(prefix):
                continue
            pid = p.name[len(prefix):].split("-", 1)[0]
            if pid.isdigit() and not _pid_alive(int(pid)):
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)


def _journal(out: Path) -> Path:
    return out.parent / f".{out.name}{_JOURNAL}"


def recover(out) -> None:
    """Finish a --force replacement that a crash interrupted (fallback path without exchange)."""
    out = Path(out)
    j = _journal(out)
    if not j.is_file():
        return
    try:
        rec = json.loads(j.read_text())
        new, old = Path(rec["new"]), Path(rec["old"])
    except (OSError, ValueError, KeyError, TypeError):
        j.unlink(missing_ok=True)
        return
    if not out.exists():
        if new.exists():
            os.replace(new, out)        # the new output was complete: finish the swap
        elif old.exists():
            os.replace(old, out)        # roll back
    if old.exists():
        shutil.rmtree(old, ignore_errors=True)
    if new.exists() and new != out:
        shutil.rmtree(new, ignore_errors=True)
    j.unlink(missing_ok=True)


def check_not_cwd(out: Path) -> None:
    """Refuse an output that is the current directory or one of its parents."""
    try:
        cwd = Path.cwd().resolve()
    except OSError:
        return
    res = out.resolve()
    if res == cwd or res in cwd.parents:
        raise QornnError(f"output directory {out} is the current directory or one of its parents; "
                         "choose a new directory")


def prepare_dir(out, force: bool = False, marker: str | None = None) -> Path:
    """Check that `out` may be (re)written and return a fresh temp dir beside it."""
    out = Path(out)
    if out.name in ("", ".", ".."):
        out = Path(os.path.abspath(out))
    check_not_cwd(out)
    recover(out)
    clean_stale(out)
    if out.is_symlink() and not out.exists():
        raise QornnError(f"output path {out} is a dangling symbolic link")
    if out.exists():
        if not out.is_dir():
            raise QornnError(f"output path {out} exists and is not a directory")
        if any(out.iterdir()) and not force:
            what = "an earlier output" if marker and (out / marker).exists() else "other files"
            raise QornnError(f"output directory {out} already holds {what}; pass --force to replace it")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=_temp_name(out.name, _TMP), dir=out.parent))
    except OSError as e:
        raise QornnError(f"cannot create output directory beside {out}: {e.strerror or e}") from None
    apply_umask(tmp, is_dir=True)
    return tmp


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
_renameat2 = None


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    global _renameat2
    if _renameat2 is None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fn = libc.renameat2
            fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
            fn.restype = ctypes.c_int
            _renameat2 = fn
        except (OSError, AttributeError):
            _renameat2 = False
    if not _renameat2:
        return False
    rc = _renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def commit_dir(tmp: Path, out) -> None:
    """Move the completed temp dir `tmp` into place as `out` (replacing an existing `out`)."""
    out = Path(out)
    if out.name in ("", ".", ".."):
        out = Path(os.path.abspath(out))
    if not os.path.lexists(out):
        os.replace(tmp, out)
        return
    if out.is_dir() and not out.is_symlink() and _exchange(tmp, out):
        shutil.rmtree(tmp, ignore_errors=True)      # tmp now holds the old output
        return
    # Fallback: two renames, with a journal so that the next run can finish or roll back.
    old = Path(tempfile.mkdtemp(prefix=_temp_name(out.name, _OLD), dir=out.parent)) / "old"
    j = _journal(out)
    j.write_text(json.dumps({"new": str(tmp), "old": str(old)}))
    os.replace(out, old)
    os.replace(tmp, out)
    j.unlink(missing_ok=True)
    shutil.rmtree(old.parent, ignore_errors=True)


def refuse_overlap(out, inputs, what: str = "output") -> None:
    """One-line error if `out` is, contains, or lies inside one of `inputs` (so that replacing it
    would destroy an input), or is a link/FIFO/device rather than a plain file or directory."""
    out = Path(out)
    if os.path.lexists(out):
        st = os.lstat(out)
        if stat.S_ISLNK(st.st_mode):
            raise QornnError(f"{what} path {out} is a symbolic link; refusing to write through it")
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
            raise QornnError(f"{what} path {out} is not a regular file or directory")
    o = out.resolve()
    for inp in inputs:
        if inp is None:
            continue
        i = Path(inp).resolve()
        if o == i or o in i.parents or i in o.parents:
            raise QornnError(f"{what} path {out} overlaps the input {inp}; choose another path")


def write_bytes_atomic(path, data: bytes) -> None:
    """Write a file via a temp file and one rename (replaces an existing file: callers check)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=_temp_name(path.name, _TMP), dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        apply_umask(tmp, is_dir=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
