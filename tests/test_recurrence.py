"""The hand-written BPTT recurrence against the autograd reference loop of QORNN.forward."""

from __future__ import annotations

import pytest
import torch

from qornn.train.recurrence import recurrence

F64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_torch_thread")   # tests/conftest.py


def reference(ux, W, b, activation, h0=None):
    """The loop of QORNN.forward, differentiated by autograd."""
    B, T, n = ux.shape
    h = ux.new_zeros(B, n) if h0 is None else h0
    wt = W.t()
    hs = []
    for t in range(T):
        z = h @ wt + ux[:, t]
        h = torch.sign(z) * torch.relu(z.abs() + b) if activation == "modrelu" else torch.relu(z)
        hs.append(h)
    return torch.stack(hs, dim=1)


def make_case(seed, B, T, n, activation, with_h0, exact_zeros):
    g = torch.Generator().manual_seed(seed)
    ux = torch.randn(B, T, n, generator=g, dtype=F64)
    W = torch.randn(n, n, generator=g, dtype=F64) / n**0.5
    b = (torch.randn(n, generator=g, dtype=F64) * 0.5) if activation == "modrelu" else None
    h0 = torch.randn(B, n, generator=g, dtype=F64) if with_h0 else None
    if exact_zeros:
        # Dyadic values and a unit with no recurrent input: z = 0 exactly, and for modReLU
        # |z| + b = 0 exactly, at many (batch, time) positions.
        W = torch.round(W * 8) / 8
        W[0] = 0.0
        ux = torch.round(ux * 2) / 2
        ux[:, ::2, 0] = 0.0  # z_0 = 0
        if b is not None:
            b = torch.round(b * 4) / 4
            b[0] = -0.5  # |z_0| + b_0 = 0 where ux = +-0.5
            if n > 1:
                b[1] = 0.0
                W[1] = 0.0
                ux[:, 1::3, 1] = 0.0  # z_1 = 0 with b_1 = 0
        if h0 is not None:
            h0 = torch.round(h0 * 2) / 2
    leaves = [ux, W] + ([b] if b is not None else []) + ([h0] if h0 is not None else [])
    for x in leaves:
        x.requires_grad_(True)
    return ux, W, b, h0, leaves


def assert_grads_close(got, want, rel=1e-10):
    for g1, g2 in zip(got, want):
        assert g1.shape == g2.shape and g1.dtype == g2.dtype
        scale = g2.abs().max().item()
        err = (g1 - g2).abs().max().item()
        assert err <= rel * scale + 1e-300, (err, scale)


@pytest.mark.parametrize("activation", ["modrelu", "relu"])
@pytest.mark.parametrize("n", [1, 7, 37])
@pytest.mark.parametrize("T", [1, 50])
@pytest.mark.parametrize("with_h0", [False, True])
@pytest.mark.parametrize("exact_zeros", [False, True])
def test_matches_autograd_reference(activation, n, T, with_h0, exact_zeros):
    B = 5
    ux, W, b, h0, leaves = make_case(n * 1000 + T, B, T, n, activation, with_h0, exact_zeros)
    got = recurrence(ux, W, b, activation, h0)
    want = reference(ux, W, b, activation, h0)
    assert got.shape == (B, T, n)
    assert torch.equal(got, want)
    if exact_zeros and T > 1:
        assert (got == 0).any()
    grad_out = torch.randn(B, T, n, dtype=F64, generator=torch.Generator().manual_seed(7))
    g_got = torch.autograd.grad(got, leaves, grad_out)
    g_want = torch.autograd.grad(want, leaves, grad_out)
    assert_grads_close(g_got, g_want)


def test_kink_conventions_exact():
    """At z = 0 and at |z| + b = 0 every derivative is 0, as autograd's sign/abs/relu give."""
    ux = torch.tensor([[[0.0, 0.5, -0.5, 0.0]]], dtype=F64, requires_grad=True)
    W = torch.zeros(4, 4, dtype=F64, requires_grad=True)
    b = torch.tensor([0.0, -0.5, -0.5, 0.25], dtype=F64, requires_grad=True)
    H = recurrence(ux, W, b, "modrelu")
    assert torch.equal(H, torch.tensor([[[0.0, 0.0, 0.0, 0.0]]], dtype=F64))
    H.sum().backward()
    assert torch.equal(ux.grad, torch.zeros_like(ux))
    assert torch.equal(b.grad, torch.zeros_like(b))
    ref_leaves = [t.detach().clone().requires_grad_() for t in (ux, W, b)]
    reference(ref_leaves[0], ref_leaves[1], ref_leaves[2], "modrelu").sum().backward()
    assert torch.equal(ref_leaves[0].grad, ux.grad) and torch.equal(ref_leaves[2].grad, b.grad)


@pytest.mark.parametrize("activation", ["modrelu", "relu"])
def test_gradcheck(activation):
    g = torch.Generator().manual_seed(3)
    ux = torch.randn(2, 4, 3, dtype=F64, generator=g, requires_grad=True)
    W = (torch.randn(3, 3, dtype=F64, generator=g) / 2).requires_grad_()
    h0 = torch.randn(2, 3, dtype=F64, generator=g, requires_grad=True)
    if activation == "modrelu":
        b = (torch.randn(3, dtype=F64, generator=g) * 0.1).requires_grad_()
        assert torch.autograd.gradcheck(lambda u, w, bb, h: recurrence(u, w, bb, "modrelu", h), (ux, W, b, h0))
    else:
        assert torch.autograd.gradcheck(lambda u, w, h: recurrence(u, w, None, "relu", h), (ux, W, h0))


def test_noncontiguous_inputs_and_partial_grads():
    g = torch.Generator().manual_seed(5)
    base = torch.randn(9, 4, 6, dtype=F64, generator=g)
    ux = base.transpose(0, 1)[:, ::2].requires_grad_()  # (4, 5, 6), non-contiguous
    W = torch.randn(6, 6, dtype=F64, generator=g).t() / 3  # transposed, no grad wanted
    b = torch.randn(6, dtype=F64, generator=g).requires_grad_()
    got = recurrence(ux, W, b, "modrelu")
    want = reference(ux, W, b, "modrelu")
    assert torch.equal(got, want)
    loss_got = (got[:, -1] ** 2).sum() + got[:, 2].sum()
    loss_want = (want[:, -1] ** 2).sum() + want[:, 2].sum()
    assert_grads_close(torch.autograd.grad(loss_got, [ux, b]), torch.autograd.grad(loss_want, [ux, b]))


def test_float32_close_to_reference():
    g = torch.Generator().manual_seed(11)
    ux = torch.randn(8, 30, 16, generator=g, requires_grad=True)
    W = torch.linalg.qr(torch.randn(16, 16, generator=g))[0].requires_grad_()
    b = (torch.rand(16, generator=g) * 0.02 - 0.01).requires_grad_()
    got, want = recurrence(ux, W, b, "modrelu"), reference(ux, W, b, "modrelu")
    torch.testing.assert_close(got, want)
    go = torch.randn_like(got)
    for g1, g2 in zip(torch.autograd.grad(got, [ux, W, b], go), torch.autograd.grad(want, [ux, W, b], go)):
        torch.testing.assert_close(g1, g2, rtol=1e-4, atol=1e-4)


def test_inplace_change_of_output_is_refused():
    ux = torch.randn(2, 3, 4, requires_grad=True)
    H = recurrence(ux, torch.eye(4), None, "relu")
    with pytest.raises(RuntimeError):
        H.mul_(2)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(ux=torch.zeros(2, 3), W=torch.eye(3), b=torch.zeros(3), activation="modrelu"),
        dict(ux=torch.zeros(2, 3, 4), W=torch.eye(3), b=torch.zeros(4), activation="modrelu"),
        dict(ux=torch.zeros(2, 3, 4), W=torch.eye(4), b=None, activation="modrelu"),
        dict(ux=torch.zeros(2, 3, 4), W=torch.eye(4), b=torch.zeros(4), activation="relu"),
        dict(ux=torch.zeros(2, 3, 4), W=torch.eye(4), b=None, activation="tanh"),
        dict(ux=torch.zeros(2, 3, 4), W=torch.eye(4), b=None, activation="relu", h0=torch.zeros(3, 4)),
        dict(ux=torch.zeros(2, 3, 4), W=torch.eye(4, dtype=F64), b=None, activation="relu"),
        dict(ux=torch.zeros(2, 0, 4), W=torch.eye(4), b=None, activation="relu"),
    ],
)
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        recurrence(**kwargs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    ux, W, b, h0, leaves = make_case(1, 4, 20, 9, "modrelu", True, False)
    cuda = [t.detach().cuda().requires_grad_() for t in leaves]
    got = recurrence(cuda[0], cuda[1], cuda[2], "modrelu", cuda[3])
    want = reference(cuda[0], cuda[1], cuda[2], "modrelu", cuda[3])
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    go = torch.randn_like(got)
    assert_grads_close(torch.autograd.grad(got, cuda, go), torch.autograd.grad(want, cuda, go))
