import pytest
import torch

from qornn.train import QORNN
from qornn.train.model import reference_loop


@pytest.mark.parametrize("activation", ["modrelu", "relu"])
def test_forward_is_the_reference_loop_and_gradients_agree(activation):
    torch.manual_seed(0)
    m = QORNN(5, 13, 3, weight_bits=4, activation=activation).double()
    x = torch.randn(4, 20, 5, dtype=torch.float64)
    logits, h = m(x, return_hidden=True)
    w = m.effective_weights()
    ref = reference_loop(x @ w["U"].t(), w["W"], m.b)
    assert torch.equal(h, ref)
    g_fast = torch.autograd.grad(logits.pow(2).sum(), [p for p in m.parameters()], allow_unused=True)
    ref_logits = ref @ w["V"].t() + m.c
    g_ref = torch.autograd.grad(ref_logits.pow(2).sum(), [p for p in m.parameters()], allow_unused=True)
    for a, b in zip(g_fast, g_ref):  # float gradients summed in another order: a tolerance is right here
        assert (a is None) == (b is None)
        if a is not None:
            assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)
