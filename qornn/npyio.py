""".npy files read and written in blocks, so that memory does not grow with the file.

`qornn simulate` streams inputs of any length through the simulator; holding the whole input,
its int64 copy and the outputs at once took about 4.3x the input file. Here:

* `NpyInput` parses the header once and checks it against the file (a header that declares more
  data than the file holds is refused before anything is allocated); `block` copies one block out
  of a read-only map that is dropped right away, so pages read do not stay in the process.
* `NpyOutput` writes a temp file beside the destination (qornn's temp naming: a crash leaves
  nothing that the next run does not clean), header first, then each block at its offset with
  ``os.pwrite`` (never mapped: written pages belong to the page cache, not to the process), and
  `commit` syncs it and renames it into place; `abort` removes it. `OutputSet` does that for
  several outputs at once: all are renamed only when all are complete.

Every problem a user's file can cause is a one-line QornnError.
"""

from __future__ import annotations

import math
import mmap
import os
import stat
import tempfile
from pathlib import Path

import numpy as np
from numpy.lib import format as npformat

from qornn.atomic import _TMP, _temp_name, apply_umask, clean_stale
from qornn.errors import QornnError


def human_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"


class NpyInput:
    """A (batch, time, features) .npy file read a block at a time."""

    def __init__(self, path, what: str = "input"):
        self.path = Path(path)
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            raise QornnError(f"{what} file {path} not found") from None
        except OSError as e:
            raise QornnError(f"cannot read {what} file {path}: {e.strerror or e}") from None
        if not stat.S_ISREG(st.st_mode):
            raise QornnError(f"{what} {path} is not a regular file")
        try:
            with open(self.path, "rb") as f:
                version = npformat.read_magic(f)
                if version == (1, 0):
                    shape, fortran, dtype = npformat.read_array_header_1_0(f)
                elif version == (2, 0):
                    shape, fortran, dtype = npformat.read_array_header_2_0(f)
                else:
                    raise QornnError(f"{path}: .npy format version {version[0]}.{version[1]} is not supported")
                self.offset = f.tell()
        except QornnError:
            raise
        except OSError as e:
            raise QornnError(f"cannot read {what} file {path}: {e.strerror or e}") from None
        except (ValueError, SyntaxError, TypeError, EOFError, MemoryError, RecursionError) as e:
            msg = " ".join(str(e).split())[:160]
            raise QornnError(f"{path}: not a readable .npy array ({msg})") from None
        if dtype.hasobject:
            raise QornnError(f"{path} holds Python objects (a pickled array); qornn reads numeric arrays only")
        if dtype.names is not None or dtype.subdtype is not None:
            raise QornnError(f"{path} holds a structured dtype {dtype}; expected integer codes or float values")
        if not (dtype.kind in "iu" or (dtype.kind == "f" and dtype.itemsize <= 8)):
            raise QornnError(f"{what} dtype must be integer (codes) or float up to 64 bits (real values), got {dtype}")
        if any(d < 0 for d in shape):
            raise QornnError(f"{path}: header declares a negative dimension {shape}")
        self.shape, self.dtype, self.fortran = tuple(int(d) for d in shape), dtype, bool(fortran)
        need = math.prod(self.shape) * dtype.itemsize
        have = st.st_size - self.offset
        if need != have:
            raise QornnError(f"{path}: header declares {self.shape} {dtype} ({human_bytes(need)} of data) but the "
                             f"file holds {human_bytes(max(0, have))}: truncated or not written by numpy.save")

    def block(self, b0: int, b1: int, t0: int, t1: int) -> np.ndarray:
        """x[b0:b1, t0:t1] as an in-memory array (its own dtype); the map is dropped at once."""
        try:
            with open(self.path, "rb") as f:
                mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError) as e:
            raise QornnError(f"cannot read {self.path}: {getattr(e, 'strerror', None) or e}") from None
        try:
            if len(mm) != self.offset + math.prod(self.shape) * self.dtype.itemsize:
                raise QornnError(f"{self.path} changed size while it was being read")
            whole = np.ndarray(self.shape, dtype=self.dtype, buffer=mm, offset=self.offset,
                               order="F" if self.fortran else "C")
            out = np.array(whole[b0:b1, t0:t1], order="C")
            del whole
            return out
        finally:
            mm.close()     # unmap now: the pages read must not stay counted in this process


class NpyOutput:
    """A C-order .npy file of a known dtype and shape, filled block by block, then committed."""

    def __init__(self, path, dtype, shape: tuple):
        self.path = Path(path)
        self.dtype, self.shape = np.dtype(dtype), tuple(int(d) for d in shape)
        clean_stale(self.path)
        try:
            fd, tmp = tempfile.mkstemp(prefix=_temp_name(self.path.name, _TMP), dir=self.path.parent)
        except OSError as e:
            raise QornnError(f"cannot write beside {path}: {e.strerror or e}") from None
        self.tmp, self.fd = Path(tmp), fd
        try:
            header = {"descr": npformat.dtype_to_descr(self.dtype), "fortran_order": False, "shape": self.shape}
            with os.fdopen(os.dup(fd), "wb") as f:
                npformat.write_array_header_1_0(f, header)
                self.offset = f.tell()
            os.ftruncate(fd, self.offset + math.prod(self.shape) * self.dtype.itemsize)
        except BaseException:
            self.abort()
            raise

    def _pwrite(self, data: memoryview, pos: int) -> None:
        while len(data):
            k = os.pwrite(self.fd, data, pos)
            data, pos = data[k:], pos + k

    def write(self, index: tuple, block: np.ndarray) -> None:
        """Store `block` at out[b0:b1, t0:t1] (3-D outputs, index (b0, t0)) or out[b0:b1] (2-D, index (b0,))."""
        block = np.ascontiguousarray(block, dtype=self.dtype)
        row = math.prod(self.shape[1:]) * self.dtype.itemsize            # bytes of one sequence
        if len(index) == 1 or (index[1] == 0 and block.shape[1] == self.shape[1]):
            self._pwrite(memoryview(block).cast("B"), self.offset + index[0] * row)
            return
        b0, t0 = index
        step = math.prod(self.shape[2:]) * self.dtype.itemsize
        for i in range(block.shape[0]):
            self._pwrite(memoryview(block[i]).cast("B"), self.offset + (b0 + i) * row + t0 * step)

    def finish(self) -> None:
        """Make the content durable (before the rename makes it visible)."""
        os.fsync(self.fd)
        os.close(self.fd)
        self.fd = None
        apply_umask(self.tmp, is_dir=False)

    def commit(self) -> None:
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        if self.fd is not None:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = None
        self.tmp.unlink(missing_ok=True)


class OutputSet:
    """Several NpyOutputs that appear together: on success every file is complete and synced
    before the first rename; on any error (or Ctrl-C) every temp is removed and no destination
    is touched."""

    def __init__(self):
        self.outputs: list[NpyOutput] = []

    def add(self, path, dtype, shape) -> NpyOutput:
        out = NpyOutput(path, dtype, shape)
        self.outputs.append(out)
        return out

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            try:
                for o in self.outputs:
                    o.finish()
                for o in self.outputs:
                    o.commit()
                return False
            except BaseException:
                for o in self.outputs:
                    o.abort()
                raise
        for o in self.outputs:
            o.abort()
        return False
