"""Symmetric per-matrix weight quantizer of the QORNN paper, with a straight-through estimator.

q_k(W) = a/2^(k-1) * clamp(round(2^(k-1) W / a), -2^(k-1), 2^(k-1) - 1),  a = max|W|.

For k = 1 that formula only yields {-a, 0}, useless for an orthogonal matrix, so 1 bit is the
binary quantizer a * sign(W) with a = mean|W| and sign(0) = +1 (integers in {-1, +1}).

Narrow range (``narrow=True``): codes in [-(2^(k-1)-1), 2^(k-1)-1] with step a/(2^(k-1)-1), so
the grid is symmetric and max|W| is a code; at k = 2 this is ternary {-a, 0, +a}.
The integer view (`quantize_int`) is what the exporter writes; `fake_quantize` is what
training sees, and the two agree exactly: fake = int * scale.
"""

from __future__ import annotations

import torch

MIN_BITS, MAX_BITS = 1, 8


def check_bits(bits: int, what: str = "weight bits", lo: int = MIN_BITS, hi: int = MAX_BITS) -> int:
    from qornn.errors import QornnError

    if not isinstance(bits, int) or isinstance(bits, bool) or not lo <= bits <= hi:
        raise QornnError(f"{what} must be an integer in {lo}..{hi}, got {bits!r}")
    return bits


def int_range(bits: int, narrow: bool = False) -> tuple[int, int]:
    """Integer range of a k-bit weight: [-2^(k-1), 2^(k-1)-1] (narrow: [-(2^(k-1)-1), 2^(k-1)-1]),
    and {-1, +1} for one bit."""
    if bits == 1:
        return -1, 1
    top = 2 ** (bits - 1) - 1
    return (-top if narrow else -top - 1), top


def quantize_int(w: torch.Tensor, bits: int, narrow: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer codes (as float tensor) and the scale: w_q = codes * scale."""
    w = w.detach() if not w.requires_grad else w
    if bits == 1:
        scale = w.abs().mean().clamp_min(1e-12)
        codes = torch.where(w >= 0, torch.ones_like(w), -torch.ones_like(w))
        return codes, scale
    lo, hi = int_range(bits, narrow)
    levels = hi if narrow else -lo
    alpha = w.abs().max().clamp_min(1e-12)
    codes = torch.clamp(torch.round(w * (levels / alpha)), lo, hi)
    return codes, alpha / levels


class _STE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w, bits, narrow):
        codes, scale = quantize_int(w.detach(), bits, narrow)
        return codes * scale

    @staticmethod
    def backward(ctx, grad):
        return grad, None, None


def fake_quantize(w: torch.Tensor, bits: int | None, narrow: bool = False) -> torch.Tensor:
    """q_k(w) in the forward pass, identity gradient (STE). bits=None means full precision."""
    if bits is None:
        return w
    return _STE.apply(w, bits, narrow)
