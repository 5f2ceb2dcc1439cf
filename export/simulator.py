"""NumPy integer reference simulator: the golden model every other executor must equal.

Implements docs/spec.md step by step. Values are integers throughout. When the artifact proves
(`Artifact.float64_exact`) that every intermediate stays below 2^53, the arithmetic runs in
float64 so that the matrix products use BLAS; every value is still an exact integer (sums and
products of integers below 2^53 are exact, division by 2^shift is exact, floor is exact).
Otherwise it falls back to int64. Both paths return int64 arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qornn.errors import QornnError

from .artifact import Artifact


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
    """Run the integer recurrence on input codes (or real inputs, quantized first) of shape (B, T, m)."""
    x = check_input(art, x)
    B, T, _ = x.shape
    exact = art.float64_exact() and not force_int64
    dt = np.float64 if exact else np.int64
    W_t = art.W.astype(dt).T
    b = art.b.astype(dt)
    half, hmax, hmin = (1 << art.shift) >> 1, art.h_max, art.h_min
    # The input term of every step at once: one large matrix product.
    pre_u = x.astype(dt) @ art.U.astype(dt).T
    pre_u *= art.m_u
    pre_u += half
    h = np.zeros((B, art.hidden_size), dtype=dt)
    keep = return_hidden or art.output_mode == "every_step"
    H = np.empty((B, T, art.hidden_size), dtype=dt) if keep else None
    p = np.empty_like(h)
    for t in range(T):
        np.matmul(h, W_t, out=p)
        p *= art.m_w
        p += pre_u[:, t]
        if exact:
            z = np.floor(p / float(1 << art.shift))
        else:
            z = p >> art.shift
        if art.activation == "modrelu":
            a = np.abs(z)
            a += b
            np.clip(a, 0, hmax, out=a)
            h = np.sign(z) * a
        else:
            h = np.clip(z, hmin, hmax)
        if keep:
            H[:, t] = h
    V_t, c = art.V.astype(dt).T, art.c.astype(dt)
    out_h = H if art.output_mode == "every_step" else h
    y = out_h @ V_t + c
    hidden = H.astype(np.int64) if (return_hidden and H is not None) else None
    return SimResult(hidden=hidden, output=y.astype(np.int64), hidden_scale=art.hidden_scale,
                     output_scale=art.output_scale)
