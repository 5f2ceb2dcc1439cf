"""Learned step sizes (LSQ, Esser et al. 2020), kept as log2 of the scale (as TQT, Jain et al. 2019).

LSQ trains a quantizer's step size s by the straight-through gradient of s * round(v / s):
round(v/s) - v/s inside the range and the clipped code outside, multiplied by the gradient scale
g = 1 / sqrt(N Q_p) (N elements, Q_p the largest code) so that s learns at the pace of the
weights. Here the parameter is theta = log2 s, for two reasons:

* Adam moves a parameter by about the learning rate per step whatever its gradient's size; a
  hidden scale of 0.01 would move 20 % a step at lr 2e-3 in linear units, 0.14 % in log2 units.
* A power-of-two scale is then round(theta) with a straight-through gradient (TQT's power-of-two
  thresholds), the same parameter serving the 'lsq' and the power-of-two hidden scales.

The chain rule is untouched: dL/dtheta = ln 2 * s * g * LOG2_STEP * dL/ds, with dL/ds the LSQ
gradient (train/quantizers.py for weights, train/recurrence.py for the hidden state).

LOG2_STEP: log2 s = LOG2_STEP * theta, so Adam's ~lr step on theta moves s by LOG2_STEP * lr
octaves (at lr 2e-3: 1.4 % a step, up to 10 octaves in 500 steps). With LOG2_STEP = 1 a scale
could move by a factor 2 at most in a 500-step run, too little to leave a poor starting point.
"""

from __future__ import annotations

import math

import torch

LOG2_STEP = 10.0


def grad_scale(x: torch.Tensor, g: float) -> torch.Tensor:
    """Value x, gradient g * dL/dx (LSQ's gradscale)."""
    y = x * g
    return (x - y).detach() + y


def lsq_grad_factor(numel: int, q_p: int) -> float:
    """LSQ's gradient scale 1 / sqrt(N Q_p)."""
    return 1.0 / math.sqrt(numel * max(q_p, 1))


def scale_from_log2(theta: torch.Tensor, g: float, po2: bool = False) -> torch.Tensor:
    """s = 2^t, t = LOG2_STEP theta (po2: 2^round(t), exactly a power of two, straight-through
    gradient), with the LSQ gradient scale g applied."""
    t = grad_scale(theta, g) * LOG2_STEP
    e = torch.exp2(t)
    if not po2:
        return e
    exact = torch.ldexp(torch.ones_like(t), torch.round(t.detach()))
    return exact + (e - e.detach())  # value exactly 2^round(theta); gradient d 2^t / dt


def po2_nearest(s: float) -> float:
    """2^round(log2 s): the power of two nearest to s in the log domain."""
    return math.ldexp(1.0, round(math.log2(s)))


def log2_param(s: float) -> float:
    """The parameter theta with scale_from_log2(theta) == s (up to rounding): log2(s) / LOG2_STEP."""
    return math.log2(s) / LOG2_STEP
