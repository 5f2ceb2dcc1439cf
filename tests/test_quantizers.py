import pytest
import torch

from qornn.errors import QornnError
from qornn.train.bjorck import bjorck, orthogonality_error, spectral_norm_estimate
from qornn.train.quantizers import check_bits, fake_quantize, int_range, quantize_int


@pytest.mark.parametrize("bits", range(1, 9))
def test_codes_in_range_and_fake_equals_codes_times_scale(bits):
    w = torch.randn(33, 17)
    codes, scale = quantize_int(w, bits)
    lo, hi = int_range(bits)
    assert codes.min() >= lo and codes.max() <= hi
    assert torch.equal(codes, codes.round())
    assert torch.equal(fake_quantize(w, bits), codes * scale)
    if bits == 1:
        assert set(codes.unique().tolist()) <= {-1.0, 1.0}
    else:
        # inside the clamp range the error is at most half a step
        inside = (w / scale).abs() <= hi
        assert ((fake_quantize(w, bits) - w)[inside].abs() <= scale / 2 + 1e-6).all()
        assert len(codes.unique()) <= 2**bits


def test_more_bits_less_error():
    w = torch.randn(64, 64)
    errs = [float((fake_quantize(w, k) - w).norm()) for k in range(2, 9)]
    assert all(a > b for a, b in zip(errs, errs[1:]))


def test_straight_through_gradient_is_identity():
    w = torch.randn(8, 8, requires_grad=True)
    g = torch.randn(8, 8)
    (fake_quantize(w, 3) * g).sum().backward()
    assert torch.equal(w.grad, g)


@pytest.mark.parametrize("bad", [0, 9, -1, 2.5, True])
def test_bits_out_of_range(bad):
    with pytest.raises(QornnError, match="weight bits"):
        check_bits(bad)


def test_bjorck_is_near_orthogonal_and_differentiable():
    torch.manual_seed(0)
    w = torch.randn(48, 48, requires_grad=True)
    sigma, _ = spectral_norm_estimate(w, iters=20)
    q = bjorck(w / sigma, iters=25)
    assert orthogonality_error(q.detach()) < 1e-3 * 48**0.5 or orthogonality_error(q.detach()) < 0.05
    q.sum().backward()
    assert torch.isfinite(w.grad).all() and w.grad.abs().sum() > 0


def test_spectral_norm_estimate_close_to_svd():
    torch.manual_seed(1)
    w = torch.randn(30, 30)
    sigma, _ = spectral_norm_estimate(w, iters=100)
    assert abs(float(sigma) - float(torch.linalg.matrix_norm(w, 2))) < 1e-3 * float(sigma)
