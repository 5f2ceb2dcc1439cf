"""NumPy integer reference simulator: the golden model every other executor must equal.

Implements docs/spec.md step by step. Values are integers throughout. Each part of a step runs
in the cheapest number type that the artifact's bounds prove exact (`qornn.export.arith`, where
the proofs are): the product ``W · h`` of small codes in float32 while its partial sums stay
below 2^24, the requantization and activation in float64 while every bound is below 2^53, and
int64 where neither holds. Every path returns int64 arrays with the same integers.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import threading
from dataclasses import dataclass

import numpy as np

from qornn.errors import QornnError

from .arith import Plan, plan as make_plan, vh_bound
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
    state: np.ndarray | None = None   # (B, n) int64 h_T: pass it as `h0` to continue the sequences

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
BLOCK_BYTES = 1 << 20   # time-block buffers of one batch tile (cache-resident); see `Stream`
TILE_ROWS = 256         # sequences per batch tile: one step's working set stays in L2
SMALL_TILE = 1024       # below this many hidden values per tile, fewer calls beat cheaper types
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
        return x.astype(np.int64, copy=False)   # codes already int64: no copy
    if np.issubdtype(x.dtype, np.floating):
        if not np.all(np.isfinite(x)):
            raise QornnError("input holds NaN or inf")
        return quantize_input(art, x)
    raise QornnError(f"input dtype must be integer (codes) or float (real values), got {x.dtype}")


def quantize_input(art: Artifact, x: np.ndarray) -> np.ndarray:
    """Real inputs to codes: clamp(floor(x / s_x + 1/2), -x_max, x_max), computed in float64."""
    q = np.floor(np.asarray(x, dtype=np.float64) / art.input_scale + 0.5)
    return np.clip(q, -art.x_max, art.x_max).astype(np.int64)


def check_state(art: Artifact, h0, batch: int) -> np.ndarray:
    """Validate an initial hidden state: (batch, n) integer codes in the hidden range."""
    h0 = np.asarray(h0)
    if h0.shape != (batch, art.hidden_size) or not np.issubdtype(h0.dtype, np.integer):
        raise QornnError(f"initial state must be ({batch}, {art.hidden_size}) integer hidden codes, "
                         f"got {h0.shape} {h0.dtype}")
    if h0.size and (h0.min() < art.h_min or h0.max() > art.h_max):
        raise QornnError(f"initial state codes must lie in [{art.h_min}, {art.h_max}], "
                         f"got {int(h0.min())}..{int(h0.max())}")
    return h0.astype(np.int64)


class Stream:
    """The recurrence of a batch of sequences, fed one time block after another.

    `run(x)` takes the next steps of every sequence (input codes, (B, k, m) int64) and returns
    their output and hidden codes; the hidden state carries over exactly to the next call
    (`state`, int64). ``simulate`` is one call; ``qornn simulate`` streams a long file through
    it in blocks so that memory stays bounded.

    Speed notes (results are unchanged by them; the number types come from `arith.plan`):

    * Batch tiles of `TILE_ROWS` sequences go through a time block of C steps at a time. Slot j
      of the block buffer Z (C+1, tile, n) holds h_{t-1}, and the activation writes h_t straight
      into slot j+1; nothing is allocated inside the loop. C is chosen so that the block's
      buffers fit in `BLOCK_BYTES` (cache-resident); after each block its hidden codes are copied
      out as int64 and its outputs computed with one product.
    * The input term of the whole block, ``(M'_U U x_t + 2^(S-1)) 2^-S``, is one matrix product
      before the time loop (a constant-1 input column carries the rounding offset). Per step:
      one product ``W · h`` (float32 where exact: half the bytes and twice the speed of float64),
      then ``p = aW · M_W 2^-S_W + input term``, ``floor``, and the activation. When the W product
      and the work share a type, ``M'_W 2^-S`` is folded into W as well (one pass fewer).
    * sign(z) is ``clip(z, -1, 1)`` (z is an integer; NumPy's ``sign`` is several times slower).
    * The loop runs BLAS single-threaded (see ``blas_threads``).
    """

    def __init__(self, art: Artifact, batch: int, h0=None, force_int64: bool = False, plan: Plan | None = None):
        self.art = art
        n, m, o = art.hidden_size, art.input_size, art.output_size
        self.B = int(batch)
        self.tile = max(1, min(self.B, TILE_ROWS))
        if plan is None:
            plan = make_plan(art, force_int64)
            if plan.work is np.float64 and self.tile * n < SMALL_TILE:
                # A few sequences: the per-call overhead, not the arithmetic, sets the pace; float64
                # W (exact: M'_W acc_w <= pre < 2^53) folds M'_W in and saves two calls per step.
                plan = dataclasses.replace(plan, w=np.float64, act=np.float64)
        self.plan = pl = plan
        S = art.shift
        half = (1 << S) >> 1
        W_t, U_t = art.W.astype(np.int64).T, art.U.astype(np.int64).T
        self.fold_w = pl.w is pl.work
        if pl.work is np.float64:
            scale = 2.0 ** -S              # exact: a power of two
            # [x, 1] . [M'_U U^T 2^-S; 2^(S-1) 2^-S]: partial sums k 2^-S with |k| <= pre < 2^53.
            self.K_u = np.concatenate([art.mult_u * U_t, np.full((1, n), half, dtype=np.int64)]).astype(np.float64)
            self.K_u *= scale
            self.s_w = np.float64(np.ldexp(float(art.m_w), -art.shift_w))    # M'_W 2^-S, exact
            self.K_w = (art.mult_w * W_t).astype(np.float64) * scale if self.fold_w else W_t.astype(pl.w)
        else:
            self.K_u = U_t.astype(pl.u)
            self.m_u, self.half = np.int64(art.mult_u), np.int64(half)
            self.s_w = np.int64(art.mult_w)                      # M'_W <= pre < 2^62
            self.K_w = art.mult_w * W_t if self.fold_w else W_t.astype(pl.w)
        self.V_t = art.V.astype(np.int64).T.astype(pl.v)
        self.y_int32 = pl.v is not np.int64 and vh_bound(art) < 2**31     # V.h fits int32: convert through it
        self.c = art.c.astype(np.int64)
        self.every = art.output_mode == "every_step"
        h0 = np.zeros((self.B, n), dtype=np.int64) if h0 is None else check_state(art, h0, self.B)
        self._h = h0.astype(pl.w)                                 # h_max < 2^15: exact in every type
        isz_w, isz = np.dtype(pl.w).itemsize, 8
        per_step = self.tile * (n * isz_w + n * isz + (m + 1) * np.dtype(pl.u).itemsize)   # Z, PU, X
        self.C = max(1, BLOCK_BYTES // per_step)
        self._buffers: dict = {}

    @property
    def state(self) -> np.ndarray:
        """h after the last step fed so far, (B, n) int64 (the initial state before any step)."""
        return self._h.astype(np.int64)

    def last_output(self) -> np.ndarray:
        """``V h + c`` of the current state, (B, o) int64 (the ``last_step`` output)."""
        return (self._h.astype(self.plan.v) @ self.V_t).astype(np.int64) + self.c

    def _buf(self, C: int):
        if C not in self._buffers:
            self._buffers.clear()
            n, m, t, pl = self.art.hidden_size, self.art.input_size, self.tile, self.plan
            X = np.empty((C, t, m + 1), dtype=pl.u)
            X[:, :, m] = 1
            p = np.empty((t, n), dtype=pl.work)
            self._buffers[C] = dict(
                Z=np.empty((C + 1, t, n), dtype=pl.w), X=X, PU=np.empty((C, t, n), dtype=pl.work), p=p,
                aw=p if self.fold_w else np.empty((t, n), dtype=pl.w),
                z=p if pl.act is pl.work else np.empty((t, n), dtype=pl.act),
                a=np.empty((t, n), dtype=pl.act),
                b=np.broadcast_to(self.art.b.astype(pl.act), (t, n)).copy(),   # a contiguous add is ~4x faster
                h32=np.empty((C, t, n), dtype=np.int32), i32=np.empty((t, n), dtype=np.int32))
        return self._buffers[C]

    def run(self, x: np.ndarray, hidden: bool = True, output: bool = True):
        """Feed input codes x (B, k, m) int64 (validated by the caller, e.g. `check_input`).

        Returns (y, h): y the (B, k, o) int64 output codes of these steps for ``every_step``
        (None for ``last_step``, or when `output` is False: use `last_output`), h the (B, k, n)
        int64 hidden codes (None when `hidden` is False)."""
        art, pl = self.art, self.plan
        B, k_all, m = x.shape
        if B != self.B or m != art.input_size:
            raise QornnError(f"input block must have shape ({self.B}, time, {art.input_size}), got {x.shape}")
        n, o = art.hidden_size, art.output_size
        H = np.empty((B, k_all, n), dtype=np.int64) if hidden else None
        Y = np.empty((B, k_all, o), dtype=np.int64) if (output and self.every) else None
        C = int(min(k_all, self.C))
        buf = self._buf(C)
        Z, X, PU = buf["Z"], buf["X"], buf["PU"]
        float_work = pl.work is np.float64
        S, hmax, Kw, s_w = art.shift, art.h_max, self.K_w, self.s_w
        modrelu, fold, z_apart = art.activation == "modrelu", self.fold_w, pl.act is not pl.work
        same_out = pl.act is pl.w      # the activation writes h_t in the W product's type directly
        # int64 work: float32 values (|aW| <= acc_w < 2^24, |z| <= zb < 2^24) convert through int32
        via32 = not float_work and pl.w is np.float32
        with blas_threads(LOOP_BLAS_THREADS if pl.w is not np.int64 else None):
            for b0 in range(0, B, self.tile):
                b1 = min(B, b0 + self.tile)
                nb = b1 - b0
                p, aw, z, a, b, i32 = (buf[k][:nb] for k in ("p", "aw", "z", "a", "b", "i32"))
                Z[0, :nb] = self._h[b0:b1]
                for t0 in range(0, k_all, C):
                    k = min(C, k_all - t0)
                    Xk, PUk = X[:k, :nb], PU[:k, :nb]
                    Xk[:, :, :m] = x[b0:b1, t0:t0 + k].transpose(1, 0, 2)
                    if float_work:
                        np.matmul(Xk, self.K_u, out=PUk)
                    else:
                        PUk[...] = np.matmul(Xk[:, :, :m], self.K_u)
                        PUk *= self.m_u
                        PUk += self.half
                    for j in range(k):
                        # Conversions between types are explicit copies: a NumPy operation with mixed
                        # types goes through a buffered casting loop, 2-4x slower than cast + operation.
                        np.matmul(Z[j, :nb], Kw, out=aw)        # aw is p when M'_W is folded into Kw
                        if not fold:
                            if via32:                           # float32 -> int64 through int32 (SIMD)
                                np.copyto(i32, aw, casting="unsafe")
                                np.copyto(p, i32)
                            else:
                                np.copyto(p, aw, casting="unsafe")  # an exact integer: exact in any type
                            p *= s_w
                        p += PUk[j]
                        if S:
                            if float_work:
                                np.floor(p, out=p)
                            else:
                                np.right_shift(p, S, out=p)     # arithmetic shift: floor division by 2^S
                        if z_apart:                             # |z| <= zb < 2^24: exact in float32
                            if float_work:
                                np.copyto(z, p, casting="unsafe")
                            else:
                                np.copyto(i32, p, casting="unsafe")
                                np.copyto(z, i32)
                        dest = Z[j + 1, :nb]
                        if modrelu:
                            np.abs(z, out=a)
                            a += b
                            _clip(a, 0, hmax, out=a)
                            _clip(z, -1, 1, out=z)        # sign(z), z integer
                            if same_out:
                                np.multiply(z, a, out=dest)
                            else:
                                np.multiply(z, a, out=a)
                                np.copyto(dest, a, casting="unsafe")
                        elif same_out:
                            _clip(z, 0, hmax, out=dest)
                        else:
                            _clip(z, 0, hmax, out=z)
                            np.copyto(dest, z, casting="unsafe")
                    hs = Z[1:k + 1, :nb]                  # (k, nb, n)
                    # Out as int64 through int32 (|h| <= h_max < 2^15): NumPy converts float to int32
                    # with SIMD, to int64 element by element (~5x slower on 262 MB of hidden codes).
                    if H is not None:
                        h32 = buf["h32"][:k, :nb]
                        np.copyto(h32, hs, casting="unsafe")
                        H[b0:b1, t0:t0 + k] = h32.transpose(1, 0, 2)
                    if Y is not None:
                        yk = hs.reshape(k * nb, n).astype(pl.v, copy=False) @ self.V_t
                        if self.y_int32:
                            yk = yk.astype(np.int32)
                        Yv = Y[b0:b1, t0:t0 + k]
                        Yv[...] = yk.reshape(k, nb, o).transpose(1, 0, 2)
                        Yv += self.c
                    Z[0, :nb] = Z[k, :nb]
                self._h[b0:b1] = Z[0, :nb]
        return Y, H


def simulate(art: Artifact, x, return_hidden: bool = True, force_int64: bool = False, h0=None,
             plan: Plan | None = None) -> SimResult:
    """Run the integer recurrence on input codes (or real inputs, quantized first) of shape (B, T, m).

    `h0` (B, n) hidden codes start the sequences from a given state instead of 0 (to continue a
    stream: pass the previous result's `state`). `force_int64` runs every part in int64 (the
    reference fallback); `plan` forces other number types (tests only: an inexact plan gives
    wrong integers). See `Stream` for how it is fast."""
    x = check_input(art, x)
    s = Stream(art, x.shape[0], h0=h0, force_int64=force_int64, plan=plan)
    y, h = s.run(x, hidden=return_hidden)
    if y is None:
        y = s.last_output()
    return SimResult(hidden=h, output=y, hidden_scale=art.hidden_scale, output_scale=art.output_scale,
                     state=s.state)
