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


WEIGHT_SCALES = ("max", "lsq", "po2")
"""How a weight tensor's scale is chosen (``--weight-scale``):
  max  the paper's max-abs: s = max|w| / 2^(k-1) (narrow: / (2^(k-1) - 1)); one bit: mean|w|
  lsq  learned step size (Esser et al. 2020, `train/lsq.py`): s is a trained parameter
  po2  the max-abs scale rounded UP to a power of two: nothing clips that max-abs would not clip,
       at most one bit of resolution is given away, and the exported requant multiplier is 1
"""


def po2_ceil(s: torch.Tensor) -> torch.Tensor:
    """The smallest power of two >= s (s > 0), computed exactly (frexp, no log rounding)."""
    m, e = torch.frexp(s)
    return torch.ldexp(torch.ones_like(s), torch.where(m == 0.5, e - 1, e))


def spectral_scale(codes: torch.Tensor, scale: torch.Tensor, po2: bool = False) -> torch.Tensor:
    """The largest scale s' <= scale with sigma_max(codes) s' <= 1 (``--spectral-scale``).

    The codes do not change, only the scale: q(W) = codes s' is non-expansive, so the hidden
    state of a long sequence cannot grow geometrically through W (QORNN's integer-gap diagnosis
    on pMNIST). sigma_max is taken in float64 (SVD); the float32 scale is nudged down until the
    product, in float64, is <= 1. With po2 the result is a power of two."""
    sig = float(torch.linalg.matrix_norm(codes.detach().double(), ord=2))
    cur = float(scale.detach())
    if sig * cur <= 1.0 or sig == 0.0:
        return scale
    target = 1.0 / sig
    if po2:
        import math

        new = torch.tensor(math.ldexp(1.0, math.frexp(target)[1] - 1), dtype=scale.dtype)  # power of 2 <= target
        if float(new) * sig > 1.0:
            new = new / 2
    else:
        new = torch.tensor(target, dtype=scale.dtype)
        while float(new) * sig > 1.0:
            new = torch.nextafter(new, torch.zeros_like(new))
    new = new.to(scale.device)
    if not scale.requires_grad:
        return new
    # value exactly `new`, gradient new/scale (a learned scale keeps learning through the shrink)
    return new + (scale - scale.detach()) * (new / scale).detach()


class _Quantized(torch.autograd.Function):
    """Value codes * s exactly (the product the exporter's integers stand for); gradients
    grad * gw for w (the STE, masked and scaled as the mode says) and sum(grad * r) for s."""

    @staticmethod
    def forward(ctx, w, s, codes, r, gw):
        ctx.save_for_backward(r, gw)
        ctx.s_shape = s.shape
        return codes * s

    @staticmethod
    def backward(ctx, grad):
        r, gw = ctx.saved_tensors
        gs = (grad * r).sum().reshape(ctx.s_shape) if ctx.needs_input_grad[1] else None
        return grad * gw, gs, None, None, None


def quantize(w: torch.Tensor, bits: int | None, narrow: bool = False, *, mode: str = "max",
             scale: torch.Tensor | None = None, stochastic: bool = False, spectral: bool = False,
             noise_rate: float = 0.0, round_scale=None):
    """(w_q, codes, s): the fake-quantized tensor (differentiable), its integer codes (float
    tensor) and its scale, with w_q == codes * s exactly. bits=None: (w, None, None).

    mode: ``WEIGHT_SCALES``; ``scale`` is the learned scale for mode 'lsq' (a tensor with grad).
    stochastic: round v = w/s to floor(v + u), u ~ U[0, 1) (Gupta et al. 2015; unbiased:
    E[codes] = v inside the range). spectral: shrink the scale so sigma_max(w_q) <= 1.
    noise_rate p: Quant-Noise (Fan et al. 2020): each entry is quantized with probability p and
    left in full precision otherwise (fresh mask each call; codes and s are the full quantization).
    round_scale(s, down): a last adjustment of the scale (the requant grid of hidden-state QAT).
    Gradients: max/po2: identity (the paper's STE); lsq: the LSQ rule, 1[inside] for w and
    round(v) - v inside / the clipped code outside for s."""
    if bits is None:
        return w, None, None
    if mode not in WEIGHT_SCALES:
        raise ValueError(f"unknown weight scale mode {mode!r}")
    wd = w.detach()
    lsq = mode == "lsq"
    if lsq and scale is None:
        raise ValueError("mode 'lsq' needs the learned scale")
    if bits == 1:
        s = scale if lsq else wd.abs().mean().clamp_min(1e-12)
        if mode == "po2":
            s = po2_ceil(s)
        codes = torch.where(wd >= 0, torch.ones_like(wd), -torch.ones_like(wd))
        v, inside = None, None
    else:
        lo, hi = int_range(bits, narrow)
        levels = hi if narrow else -lo
        if lsq:
            s = scale
            v = wd / s.detach()
        else:
            alpha = wd.abs().max().clamp_min(1e-12)
            if mode == "po2":
                s = po2_ceil(alpha / levels)
                v = wd / s
            else:
                s = alpha / levels
                v = wd * (levels / alpha)  # the formula of `quantize_int` (same codes, bit for bit)
        rounded = torch.floor(v + torch.rand_like(v)) if stochastic else torch.round(v)
        codes = torch.clamp(rounded, lo, hi)
        inside = (v >= lo) & (v <= hi)
    s_eff = spectral_scale(codes, s, po2=mode == "po2") if spectral else s
    if round_scale is not None:
        s_eff = round_scale(s_eff, spectral)
    kappa = (s_eff / s).detach() if spectral else None
    if lsq:
        r = codes if v is None else torch.where(inside, codes - v, codes)
        gw = torch.ones_like(wd) if inside is None else inside.to(wd.dtype)
    else:
        r = torch.zeros_like(wd)
        gw = torch.ones_like(wd)
    if kappa is not None:
        gw = gw * kappa
    wq = _Quantized.apply(w, s_eff, codes, r, gw)
    if noise_rate > 0:
        wq = torch.where(torch.rand_like(wd) < noise_rate, wq, w)
    return wq, codes, s_eff.detach()


def fake_quantize(w: torch.Tensor, bits: int | None, narrow: bool = False, **options) -> torch.Tensor:
    """q_k(w) in the forward pass, identity gradient (STE) by default. bits=None means full
    precision. Options: see `quantize`."""
    return quantize(w, bits, narrow, **options)[0]


def on_grid(c: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """round(c / s) * s exactly (the exporter's rounding of the output bias), identity gradient."""
    codes = torch.round(c.detach() / s)
    return _Quantized.apply(c, s, codes, torch.zeros_like(codes), torch.ones_like(codes))



class _ValueOf(torch.autograd.Function):
    """Value `value` (computed without autograd), gradient passed to `like` unchanged."""

    @staticmethod
    def forward(ctx, like, value):
        return value.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad, None


def value_of(value: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A tensor equal to `value` whose gradient flows to `like` (same shape): a straight-through
    substitution of an exactly computed value for its differentiable approximation."""
    return _ValueOf.apply(like, value.detach())
