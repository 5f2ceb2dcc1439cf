"""NumPy integer reference simulator: the golden model every other executor must equal.

Implements docs/spec.md step by step. Values are integers throughout. When the artifact proves
(`Artifact.float64_exact`) that every intermediate stays below 2^53, the arithmetic runs in
float64 so that the matrix products use BLAS; every value is still an exact integer (sums and
products of integers below 2^53 are exact, division by 2^shift is exact, floor is exact).
Otherwise it falls back to int64. Both paths return int64 arrays.
"""

from __future__ import annotations

import contextlib
import ctypes
import threading
from dataclasses import dataclass

import numpy as np

from qornn.errors import QornnError

from .artifact import Artifact

try:  # the ufunc behind np.clip, without its Python-level wrapper (~10 us a call saved)
    from numpy._core.umath import clip as _clip
except ImportError:  # other NumPy versions
    _clip = np.clip


@dataclass
class SimResult:
    hidden: np.ndarray | None   # (B, T, n) int64 hidden codes, scale artifact.hidden_scale
    output: np.ndarray          # (B, T, o) or (B, o) int64 output codes, scale artifact.output_scale
    hidden_scale: float
    output_scale: float

    @property
    def output_real(self) -> np.ndarray:
        return self.output * self.output_scale

    @property
    def hidden_real(self) -> np.ndarray | None:
        return None if self.hidden is None else self.hidden * self.hidden_scale


# -- BLAS threads in the time loop ----------------------------------------------------------
# Each step's product is small ((B x n) . (n x n)); OpenBLAS splits it over its worker threads,
# which meet at a barrier every call. On an idle machine that gains little; on a busy one (other
# processes on the cores) a descheduled worker stalls every step: measured on a 2-core box, a
# (256x128).(128x128) product took ~16 ms with 2 threads and ~0.6 ms with 1 under load. So the
# loop runs OpenBLAS single-threaded, found through ctypes in the already loaded library (numpy
# stays the only dependency); where no OpenBLAS control is found this is a no-op. The setting is
# process-wide while the loop runs and restored afterwards. Results never depend on it.
LOOP_BLAS_THREADS = 1
BLOCK_BYTES = 4 << 20   # size of the simulator's block buffer (cache-resident); see `simulate`
_BLAS_SYMBOLS = (("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_"),
                 ("scipy_openblas_get_num_threads", "scipy_openblas_set_num_threads"),
                 ("openblas_get_num_threads64_", "openblas_set_num_threads64_"),
                 ("openblas_get_num_threads", "openblas_set_num_threads"))
_blas_ctl: list | None = None


def _blas_controls() -> list:
    """(get, set) pairs of every OpenBLAS loaded in this process (Linux /proc/self/maps)."""
    global _blas_ctl
    if _blas_ctl is None:
        _blas_ctl = []
        try:
            with open("/proc/self/maps") as f:
                paths = sorted({ln.split()[-1] for ln in f if "openblas" in ln.rsplit("/", 1)[-1].lower()})
            for path in paths:
                lib = ctypes.CDLL(path)
                for get_name, set_name in _BLAS_SYMBOLS:
                    if hasattr(lib, get_name) and hasattr(lib, set_name):
                        get, set_ = getattr(lib, get_name), getattr(lib, set_name)
                        get.restype, get.argtypes = ctypes.c_int, []
                        set_.restype, set_.argtypes = None, [ctypes.c_int]
                        _blas_ctl.append((get, set_))
                        break
        except (OSError, ValueError, AttributeError):
            pass
    return _blas_ctl


_blas_lock = threading.Lock()
_blas_users = 0
_blas_saved: list = []


@contextlib.contextmanager
def blas_threads(n: int | None):
    """Run the block with `n` OpenBLAS threads (None: leave as is); the old count comes back when
    the last concurrent user leaves (safe when several Python threads simulate at once)."""
    global _blas_users, _blas_saved
    ctl = _blas_controls() if n else []
    if not ctl:
        yield
        return
    with _blas_lock:
        if _blas_users == 0:
            _blas_saved = [get() for get, _ in ctl]
            for _, set_ in ctl:
                set_(n)
        _blas_users += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0:
                for (_, set_), old in zip(ctl, _blas_saved):
                    set_(old)

def check_input(art: Artifact, x) -> np.ndarray:
    """Validate a (batch, time, features) array; integer arrays must already be input codes."""
    x = np.asarray(x)
    if x.ndim != 3 or x.shape[2] != art.input_size or x.shape[0] < 1 or x.shape[1] < 1:
        raise QornnError(f"input must have shape (batch, time, {art.input_size}), got {x.shape}")
    if np.issubdtype(x.dtype, np.integer):
        if x.size and (x.min() < -art.x_max or x.max() > art.x_max):
            raise QornnError(f"integer input codes must lie in [-{art.x_max}, {art.x_max}] "
                             f"({art.input_bits}-bit), got {int(x.min())}..{int(x.max())}")
        return x.astype(np.int64)
    if np.issubdtype(x.dtype, np.floating):
        if not np.all(np.isfinite(x)):
            raise QornnError("input holds NaN or inf")
        return quantize_input(art, x)
    raise QornnError(f"input dtype must be integer (codes) or float (real values), got {x.dtype}")


def quantize_input(art: Artifact, x: np.ndarray) -> np.ndarray:
    """Real inputs to codes: clamp(floor(x / s_x + 1/2), -x_max, x_max), computed in float64."""
    q = np.floor(np.asarray(x, dtype=np.float64) / art.input_scale + 0.5)
    return np.clip(q, -art.x_max, art.x_max).astype(np.int64)


def simulate(art: Artifact, x, return_hidden: bool = True, force_int64: bool = False) -> SimResult:
    """Run the integer recurrence on input codes (or real inputs, quantized first) of shape (B, T, m).

    Speed notes (results are unchanged by them). One matrix product per step does all the
    arithmetic before the activation: a block buffer Z of shape (C+1, B, n+m+1) holds in slot j the
    rows ``[h_{t-1}, x_t, 1]``, so ``Z[j] · [M_W Wᵀ; M_U Uᵀ; 2^(S-1)]`` is ``p_t``, and the
    activation writes h_t straight into slot j+1; nothing is allocated inside the loop. Every C
    steps (a block of a few MB, cache-resident) the block's hidden codes are copied out as int64,
    its outputs computed with one product, and the last state moved to slot 0, so memory stays
    O(B·T·n) for the returned codes only. In float64 the factor 2^-S is folded into the matrix
    too: a power-of-two scaling only moves the exponent, so every partial sum is ``k · 2^-S`` with
    ``|k|`` below the spec's ``pre`` bound < 2^53, exact in any order, and ``floor`` gives the
    spec's rounding. sign(z) is ``clip(z, -1, 1)`` (z is an integer; NumPy's ``sign`` is several
    times slower). The loop runs BLAS single-threaded (see ``blas_threads``).
    """
    x = check_input(art, x)
    B, T, m = x.shape
    n, o = art.hidden_size, art.output_size
    exact = art.float64_exact() and not force_int64
    dt = np.float64 if exact else np.int64
    S = art.shift
    half = (1 << S) >> 1
    K = np.concatenate([art.mult_w * art.W.astype(np.int64).T, art.mult_u * art.U.astype(np.int64).T,
                        np.full((1, n), half, dtype=np.int64)]).astype(dt)
    if exact:
        K *= 2.0 ** -S
    V_t, c = art.V.astype(dt).T, art.c.astype(dt)
    every = art.output_mode == "every_step"
    C = int(min(T, max(1, BLOCK_BYTES // (8 * B * (n + m + 1)))))    # steps per block
    Z = np.empty((C + 1, B, n + m + 1), dtype=dt)   # time-major: slot j is one contiguous (B, K)
    Z[0, :, :n] = 0                                 # h_0
    Z[:, :, n + m] = 1
    hidden = np.empty((B, T, n), dtype=np.int64) if return_hidden else None
    Y = np.empty((B, T, o), dtype=dt) if every else None
    b = art.b.astype(dt)
    hmax = art.h_max
    p = np.empty((B, n), dtype=dt)
    a = np.empty((B, n), dtype=dt)
    with blas_threads(LOOP_BLAS_THREADS if exact else None):
        for t0 in range(0, T, C):
            k = min(C, T - t0)
            Z[:k, :, n:n + m] = x[:, t0:t0 + k].transpose(1, 0, 2)
            for j in range(k):
                np.matmul(Z[j], K, out=p)
                if exact:
                    np.floor(p, out=p)
                elif S:
                    np.right_shift(p, S, out=p)  # arithmetic shift of int64: floor division by 2^S
                dest = Z[j + 1, :, :n]
                if art.activation == "modrelu":
                    np.abs(p, out=a)
                    a += b
                    _clip(a, 0, hmax, out=a)
                    _clip(p, -1, 1, out=p)     # sign(z), z integer
                    np.multiply(p, a, out=dest)
                else:
                    _clip(p, 0, hmax, out=dest)
            hs = Z[1:k + 1, :, :n]             # (k, B, n), uniform row stride: one 2-D matrix
            if hidden is not None:
                hidden[:, t0:t0 + k] = hs.transpose(1, 0, 2)
            if every:
                Y[:, t0:t0 + k] = (hs.reshape(k * B, n) @ V_t).reshape(k, B, o).transpose(1, 0, 2)
            Z[0, :, :n] = Z[k, :, :n]
    y = Y if every else Z[0, :, :n] @ V_t
    y += c
    return SimResult(hidden=hidden, output=np.ascontiguousarray(y, dtype=np.int64),
                     hidden_scale=art.hidden_scale, output_scale=art.output_scale)
