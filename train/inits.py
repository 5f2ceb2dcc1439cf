"""Initialisations of the recurrent matrix W, and which of them survive quantization exactly.

A long memory needs q(W), not W, to be orthogonal: a Haar-random orthogonal W rounded to 5 bits
has singular values 0.90..1.10, and over 1000 steps its gains reach 1e-6..1e5 (the copy task's
symbols are no longer readable from the hidden state, measured in docs/results.md). The *grid*
inits below are orthogonal matrices whose quantized codes are, exactly, a scaled orthogonal
integer matrix (codes^T codes = c I with c an integer), so the quantized recurrence starts as an
isometry at every width they admit:

  orthogonal     Haar-random (``nn.init.orthogonal_``); exact on no grid
  henaff         2x2 rotation blocks, angles U(-pi, pi) (Henaff et al. 2016); exact on no grid
  cayley         Cayley transform of a block skew-symmetric matrix, rotation angles U(0, pi/2)
                 (Helfrich et al. 2018, as expRNN's cayley init); exact on no grid
  permutation    a random permutation matrix P: exact at 2..8 bits; with narrow range P itself,
                 without it -P (the +1 code clips, -1 does not). Not random signs: with them the
                 copy task's hidden state averages to 0 over time and the read-out learned the
                 blank class ~40x more slowly (loss 2.05 instead of 0.10 after 40 steps, measured)
  rotation-grid  2x2 rotation blocks [[a, -b], [b, a]] / sqrt(a^2 + b^2) whose integers a, b are
                 codes, one a^2 + b^2 for all blocks, the top code among them (so the max-abs scale
                 is exactly 1/sqrt(a^2 + b^2)): narrow range, 2..8 bits, max or lsq scales. Angles
                 other than multiples of 90 degrees exist from 4 bits (e.g. 5 bits: 225 = 9^2 + 12^2;
                 4 bits: 50 = 1 + 49 = 25 + 25); an odd hidden size uses only a^2 + b^2 = top^2
  hadamard       a Sylvester Hadamard matrix / sqrt(n) with random row signs (hadamRNN's binary
                 orthogonal matrices): exact at 1 bit, and at 2..8 bits with narrow range; the
                 hidden size must be a power of two (a power of four with po2 scales)

The inits draw from torch's global generator, so `torch.manual_seed(seed)` before the model is
built reproduces them (what `qornn train --resume` relies on).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from qornn.errors import QornnError

from .quantizers import int_range

RECURRENT_INITS = ("orthogonal", "henaff", "cayley", "permutation", "rotation-grid", "hadamard")
GRID_INITS = ("permutation", "rotation-grid", "hadamard")


def grid_support(init: str, bits: int | None, narrow: bool, scale: str, n: int) -> str | None:
    """Why `init` is not exactly orthogonal once quantized with these settings (None: it is)."""
    if init not in GRID_INITS:
        return f"{init} is not a grid init"
    if init == "hadamard" and n & (n - 1):
        return f"a Hadamard matrix needs a power-of-two hidden size, not {n}"
    if bits is None:
        return "W is not quantized"
    if init == "hadamard" and scale == "po2" and n.bit_length() % 2 == 0:
        return f"hadamard with po2 scales needs a power-of-four hidden size (1/sqrt(n) a power of two), not {n}"
    if init == "hadamard" and bits == 1:
        return None
    elif bits == 1:
        return f"1-bit codes are +-1 everywhere: only hadamard is exact at 1 bit, not {init}"
    if init == "permutation":
        return None
    if not narrow:
        return f"{init} needs --narrow-range (its largest positive entry would clip to the code below)"
    if scale == "po2" and init != "hadamard":
        return f"{init} is exact with max or lsq scales, not po2 (a power-of-two step is not 1/sqrt(a^2+b^2))"
    return None


def rotation_codes(top: int, square: bool = False) -> tuple[int, list[tuple[int, int]]]:
    """(c, pairs): the integer pairs (a, b), 0 <= a, b <= top, with a^2 + b^2 = c, for the c of the
    form top^2 + a0^2 that has the most of them (the most distinct angles on the grid; ties: the
    smallest c). The pair with b = top makes the top code the matrix's largest entry. square: c =
    top^2 only (an odd size's last unit is a 1 = code top, exact only then)."""
    best = None
    for a0 in range(1 if square else top + 1):
        c = top * top + a0 * a0
        pairs = [(a, b) for a in range(top + 1) for b in range(top + 1) if a * a + b * b == c]
        if best is None or len(pairs) > len(best[1]):
            best = (c, pairs)
    return best


def init_recurrent(W: torch.Tensor, init: str, bits: int | None = None, narrow: bool = False) -> None:
    """Fill W (n x n) in place with the `init` scheme (see the module docstring)."""
    n = W.shape[0]
    with torch.no_grad():
        if init == "orthogonal":
            nn.init.orthogonal_(W)
        elif init in ("henaff", "cayley"):
            if init == "henaff":
                theta = (torch.rand(n // 2) * 2 - 1) * math.pi
            else:
                theta = torch.rand(n // 2) * (math.pi / 2)
            W.copy_(_rotation_blocks(torch.cos(theta), torch.sin(theta), n))
            if init == "cayley":  # the same rotations as a Cayley transform (I - A)(I + A)^-1 of skew A
                a = torch.zeros(n, n, dtype=torch.float64)
                t = torch.tan(theta.double() / 2)
                idx = torch.arange(n // 2) * 2
                a[idx, idx + 1], a[idx + 1, idx] = t, -t
                eye = torch.eye(n, dtype=torch.float64)
                W.copy_(torch.linalg.solve((eye + a).t(), (eye - a).t()).t())
        elif init == "permutation":
            p = torch.eye(n)[torch.randperm(n)]
            W.copy_(p if narrow else -p)
        elif init == "rotation-grid":
            top = int_range(bits or 8, True)[1]
            c, pairs = rotation_codes(top, square=n % 2 == 1)
            pick = torch.randint(len(pairs), (n // 2,))
            ab = torch.tensor(pairs, dtype=torch.float64)[pick]
            sgn = torch.where(torch.rand(n // 2, 2) < 0.5, -1.0, 1.0).double()
            a, b = ab[:, 0] * sgn[:, 0], ab[:, 1] * sgn[:, 1]
            if n // 2:  # one block holds the top code, so the max-abs scale is 1/sqrt(c) exactly
                a[0], b[0] = math.isqrt(c - top * top), top
            r = math.sqrt(c)
            m = _rotation_blocks(a / r, b / r, n, dtype=torch.float64)
            W.copy_(m)
        elif init == "hadamard":
            if n & (n - 1):
                raise QornnError(f"the hadamard init needs a power-of-two hidden size, not {n}")
            h = torch.ones(1, 1)
            while h.shape[0] < n:
                h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
            signs = torch.where(torch.rand(n) < 0.5, -1.0, 1.0)
            W.copy_(h * signs[:, None] / math.sqrt(n))
        else:
            raise QornnError(f"unknown recurrent init {init!r}; choose one of {', '.join(RECURRENT_INITS)}")


def _rotation_blocks(cos: torch.Tensor, sin: torch.Tensor, n: int, dtype=torch.float32) -> torch.Tensor:
    """Block-diagonal [[cos, -sin], [sin, cos]] blocks; an odd n ends with a 1."""
    m = torch.zeros(n, n, dtype=dtype)
    idx = torch.arange(n // 2) * 2
    m[idx, idx], m[idx, idx + 1] = cos.to(dtype), -sin.to(dtype)
    m[idx + 1, idx], m[idx + 1, idx + 1] = sin.to(dtype), cos.to(dtype)
    if n % 2:
        m[-1, -1] = 1.0
    return m
