"""The quantized-hidden-state BPTT kernel (`qrecurrence`) against an autograd reference loop.

The reference is the spec's step written with the LSQ paper's own building blocks (Esser et al.
2020, appendix: `roundpass` = round in the forward, identity in the backward) and ordinary torch
ops, differentiated by autograd: an independent statement of the STE/LSQ gradient rules. The
forward must agree exactly (codes are integers); gradients up to float summation order."""

from __future__ import annotations

import pytest
import torch

from qornn.train.recurrence import qrecurrence

F64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_torch_thread")   # tests/conftest.py


def roundpass(x, fn=torch.round):
    return (fn(x) - x).detach() + x


def reference(ux, W, b, s, h_max, activation):
    """docs/spec.md's step in real units (a = h W^T + ux, h = s c): STE on every rounding (the LSQ
    paper's roundpass), autograd everywhere else; so ds is LSQ's step-size gradient."""
    B, T, n = ux.shape
    h = ux.new_zeros(B, n)
    hs = []
    half_up = lambda v: torch.floor(v + 0.5)  # noqa: E731
    for t in range(T):
        a = h @ W.t() + ux[:, t]
        z = roundpass(a / s, half_up)
        # the LSQ paper's clip, F.hardtanh: derivative 1 strictly inside (0, h_max), 0 at the bounds
        if activation == "modrelu":
            bc = roundpass(b / s)
            c = torch.sign(z) * torch.nn.functional.hardtanh(z.abs() + bc, 0, h_max)
        else:
            c = torch.nn.functional.hardtanh(z, 0, h_max)
        h = c * s
        hs.append(h)
    return torch.stack(hs, dim=1)


def make_case(seed, B, T, n, activation, h_max, dyadic):
    g = torch.Generator().manual_seed(seed)
    s = torch.tensor(2.0 ** -3 if dyadic else 0.093, dtype=F64)
    W = torch.randn(n, n, generator=g, dtype=F64) * (1.3 / n**0.5)
    ux = torch.randn(B, T, n, generator=g, dtype=F64) * (0.6 * h_max + 1) * float(s)
    b = torch.randn(n, generator=g, dtype=F64) * (0.2 * h_max + 0.5) * float(s) if activation == "modrelu" else None
    if dyadic:  # exact arithmetic: ties of the rounding and of the clamp at h_max happen for real
        W = torch.round(W * 16) / 16
        ux = torch.round(ux * 64) / 64
        if b is not None:
            b = torch.round(b * 16) / 16
    leaves = [t.requires_grad_() for t in (ux, W, b, s) if t is not None]
    return ux, W, b, s, leaves


@pytest.mark.parametrize("activation", ["modrelu", "relu"])
@pytest.mark.parametrize("h_max", [3, 7, 127])
@pytest.mark.parametrize("dyadic", [False, True])
def test_forward_equal_and_gradients_match_autograd(activation, h_max, dyadic):
    B, T, n = 6, 40, 9
    ux, W, b, s, leaves = make_case(h_max * 7 + dyadic, B, T, n, activation, h_max, dyadic)
    got, _ = qrecurrence(ux / s, W, b, s, h_max, activation)  # the input term in hidden units
    want = reference(ux, W, b, s, h_max, activation)
    assert torch.equal(got, want)
    codes = torch.round(want.detach() / s)
    if dyadic:
        assert torch.equal(codes * s, want)
    # the cases exercise every region: zero, linear, saturated
    assert (codes == 0).any() and (codes.abs() == h_max).any()
    assert ((codes != 0) & (codes.abs() < h_max)).any()
    go = torch.randn(B, T, n, dtype=F64, generator=torch.Generator().manual_seed(1))
    g_got = torch.autograd.grad(got, leaves, go)
    g_want = torch.autograd.grad(want, leaves, go)
    for name, a, w in zip(("ux", "W", "b", "s"), g_got, g_want):
        scale = w.abs().max().item()
        assert scale > 0, name
        assert (a - w).abs().max().item() <= 1e-10 * scale, name


def test_track_gives_the_unclamped_maximum():
    ux, W, b, s, _ = make_case(3, 4, 30, 8, "modrelu", 7, False)
    with torch.no_grad():
        _, amax = qrecurrence(ux / s, W, b, s, 7, "modrelu", track=True)
        H, zero = qrecurrence(ux / s, W, b, s, 7, "modrelu")
        # recompute max |a| + max b from the quantized states
        prev = torch.cat([torch.zeros_like(H[:, :1]), H[:, :-1]], 1)
        a = prev @ W.t() + ux
    assert float(zero) == 0.0
    want = a.abs().max() + b.max()
    assert want - 1e-12 <= amax <= want + s  # (from |v + 1/2|: within one hidden step above)
