"""Hidden-state and input quantizers of hidden-state QAT (``--act-bits``).

With these the training forward runs the integer loop of docs/spec.md in floating point: inputs
are rounded to k_x-bit codes of s_x as the simulator's `quantize_input` does (floor(x/s_x + 1/2),
clamped to +-x_max), and every step's hidden state to k_h-bit codes of s_h inside the recurrence
kernel (train/recurrence.py `qrecurrence`). The trained s_x and s_h are what `qornn export`
writes, so nothing is calibrated after training.

The two ratios of the step, r_W = s_W and r_U = s_U s_x / s_h, are used exactly as the integer
loop will use them, M / 2^S with a 16-bit M (`requant_ratio`, the rule of the spec's "Requant
constants"), not as the float ratios they approximate: a one-LSB difference at a rounding tie
does not die out in a near-isometric recurrence (measured: the float ratios, 2^-16 away, changed
the hidden codes of 1-6 % of short copy-task sequences and a prediction in up to 2 %). So the
forward pass in float64 computes the spec's integers for every scale mode; in float32 it differs
from them only by float32 rounding of the sums (and not at all with power-of-two scales).

The hidden scale is either learned (``act_scale='lsq'``, the default: LSQ gradient, log2
parameter, train/lsq.py) or tracked (``'max'``: an exponential moving average, momentum 0.1, of
the batch maximum of the unclamped |a| + b, a = W h + U x, divided by h_max). LSQ can trade
clipping of rare large states against resolution of the common small ones, which a max cannot:
that is the trade a long sequence with a growing hidden state needs. The input scale is always
the running maximum of |x| / x_max: inputs are data of a known range, nothing to learn.

No LSQ+ offset: it shifts the grid by a learned zero point for asymmetric ranges. modReLU is
symmetric about 0 (sign(z) relu(|z| + b)), so the optimal offset is 0; ReLU's range [0, h_max]
already starts at the grid's 0, its most frequent value. An offset would also need a zero point
(and a W-times-offset correction) in the integer semantics, which has none.

The first quantized forward pass initialises the scales from its batch: s_x = max|x| / x_max,
and s_h from the input drive d = max|U x| (the largest one-step contribution of the input):
s_h = d / max(1, h_max // 16), i.e. the largest input step is 8 codes of an 8-bit hidden state
(1 code below 6 bits), leaving the headroom above it for the accumulation over time. Not max|h|
of the float network, as post-hoc calibration takes: an expansive q(W) makes that grow
geometrically along a long sequence (pMNIST at 4 bits: ~10^6 after 784 steps at initialisation),
every early state then rounds to 0, and a network whose hidden codes are all 0 has no gradient
(the saturating, quantized recurrence itself keeps the trained hidden state bounded).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .lsq import LOG2_STEP, log2_param, lsq_grad_factor, scale_from_log2
from .quantizers import po2_ceil

ACT_SCALES = ("lsq", "max")
REQUANT_BITS = 16  # as export.artifact.REQUANT_BITS (tests/test_qat.py pins the two rules together)


def requant_ratio(r: float, down: bool = False) -> float:
    """M / 2^S, the 16-bit requant approximation of the ratio r > 0 that the exporter derives
    (docs/spec.md: S = 16 - e for r = f 2^e, M = floor(r 2^S + 1/2), one bit less if M = 2^16).
    down: the largest such value <= r instead (keeps sigma_max(q(W)) <= 1 under --spectral-scale).
    Exported as it is, it gives back the same M / 2^S exactly."""
    _, e = math.frexp(r)
    S = REQUANT_BITS - e
    M = math.floor(math.ldexp(r, S) + 0.5)
    if M >= 2**REQUANT_BITS:
        S -= 1
        M = math.floor(math.ldexp(r, S) + 0.5)
    if down and math.ldexp(M, -S) > r:
        M -= 1
    return math.ldexp(M, -S)


def on_requant_grid(s: torch.Tensor, down: bool = False) -> torch.Tensor:
    """s moved onto the requant grid (value exactly `requant_ratio(s)`), gradient 1 (STE)."""
    v = torch.tensor(requant_ratio(float(s.detach()), down), dtype=s.dtype, device=s.device)
    return v + (s - s.detach()) if s.requires_grad else v


class ActQuant(nn.Module):
    def __init__(self, hidden_size: int, act_bits: int, input_bits: int = 8, mode: str = "lsq",
                 po2: bool = False, momentum: float = 0.1):
        super().__init__()
        self.h_max, self.x_max = 2 ** (act_bits - 1) - 1, 2 ** (input_bits - 1) - 1
        self.mode, self.po2, self.momentum = mode, po2, momentum
        self.g = lsq_grad_factor(hidden_size, self.h_max)
        if mode == "lsq":
            self.log2_scale = nn.Parameter(torch.zeros(()))
        else:
            self.register_buffer("log2_scale", torch.zeros(()))
        self.register_buffer("x_absmax", torch.zeros(()))

    def hidden_scale(self) -> torch.Tensor:
        """s_h: 0-dim, learnable under LSQ; a power of two when po2 (nearest for a learned scale,
        rounded up for a tracked maximum, like the max-abs weight scales: nothing clips)."""
        if self.mode == "lsq":
            return scale_from_log2(self.log2_scale, self.g, self.po2)
        s = torch.exp2(self.log2_scale.detach() * LOG2_STEP)
        return po2_ceil(s) if self.po2 else s

    def input_scale(self) -> torch.Tensor:
        s = (self.x_absmax / self.x_max).clamp_min(1e-12)
        return po2_ceil(s) if self.po2 else s

    def quantize_input(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_code, s_x), x_code = clamp(floor(x / s_x + 1/2), -x_max, x_max): the spec's input rule."""
        s = self.input_scale().to(x.dtype)
        return torch.clamp(torch.floor(x / s + 0.5), -self.x_max, self.x_max), s

    @torch.no_grad()
    def initialize(self, x: torch.Tensor, drive: float) -> None:
        """s_x from max|x|; s_h from the input drive max|U x| (see the module's docstring)."""
        self.x_absmax.fill_(float(x.abs().max()) or 1.0)
        self.log2_scale.fill_(log2_param(max(drive, 1e-6) / max(1, self.h_max // 16)))

    @torch.no_grad()
    def observe(self, x: torch.Tensor, a_absmax: torch.Tensor | None) -> None:
        """Training step: the running max of |x|, and the tracked hidden scale's moving average."""
        self.x_absmax.copy_(torch.maximum(self.x_absmax, x.detach().abs().max()))
        if self.mode == "max" and a_absmax is not None:
            s = torch.exp2(self.log2_scale * LOG2_STEP)
            s = (1 - self.momentum) * s + self.momentum * (a_absmax.to(s.dtype) / self.h_max).clamp_min(1e-12)
            self.log2_scale.copy_(torch.log2(s) / LOG2_STEP)


class _InputTerm(torch.autograd.Function):
    """u = x_codes U_exact^T (time-major), the input term in hidden units exactly as the integer
    loop computes it (U_exact = U codes times M_U / 2^S_U); its gradient is that of
    x_codes U_eff^T with U_eff = U_q s_x / s_h, straight through (U's STE, LSQ for s_h). Only
    the exact product runs forward and only U_eff's gradient backward."""

    @staticmethod
    def forward(ctx, u_eff, xc, u_exact):
        ctx.save_for_backward(xc)
        return xc @ u_exact.t()

    @staticmethod
    def backward(ctx, g):
        (xc,) = ctx.saved_tensors
        return g.reshape(-1, g.shape[-1]).t() @ xc.reshape(-1, xc.shape[-1]), None, None


def input_term(xc: torch.Tensor, u_q: torch.Tensor, u_codes: torch.Tensor, s_x: torch.Tensor,
               s_h: torch.Tensor, r_u: float) -> torch.Tensor:
    """(B, T, n) view of a time-major u = x U^T / s_h in hidden units (see `_InputTerm`); time-major
    because the recurrence kernel reads it step by step."""
    xt = xc.transpose(0, 1).contiguous()
    return _InputTerm.apply(u_q * (s_x / s_h), xt, u_codes * r_u).transpose(0, 1)
