"""Export: requant precision for every bit-width combination, per-tensor widths and the narrow range."""

import numpy as np
import pytest
import torch

from qornn.export.artifact import requant_error
from qornn.export.exporter import export_model
from qornn.export.onnx_writer import onnx_bytes, run_onnx
from qornn.export.simulator import simulate
from qornn.train import QORNN
from qornn.train.tasks import make_task


@pytest.fixture(scope="module")
def copy_model():
    task = make_task("copy", length=25)
    torch.manual_seed(0)
    return QORNN(task.input_size, 12, task.output_size, weight_bits=4), task


@pytest.mark.parametrize("act_bits", [2, 3, 8, 16])
@pytest.mark.parametrize("input_bits", [2, 9, 16])
def test_each_multiplier_keeps_16_bits(copy_model, act_bits, input_bits):
    """Issue class: one shared shift let the smaller multiplier round to 0 (act 2, input 16 gave
    M_U = 0: a network that ignores its input). Each product now has its own shift."""
    model, task = copy_model
    art, _ = export_model(model, task, act_bits=act_bits, input_bits=input_bits)
    r_w, r_u = art.ratios
    assert art.m_w >= 1 and art.m_u >= 1
    assert requant_error(art.m_w, art.shift_w, r_w) <= 2**-16
    assert requant_error(art.m_u, art.shift_u, r_u) <= 2**-16
    if act_bits >= 8:  # (a few-level hidden state of an untrained net may round everything to 0)
        x, _ = task.batch(8, np.random.default_rng(1))
        codes = simulate(art, x.numpy()).hidden
        zero_input = simulate(art, np.zeros((8, x.shape[1], art.input_size), dtype=np.int64)).hidden
        assert not np.array_equal(codes, zero_input)  # the input reaches the hidden state


@pytest.mark.parametrize("kw, bits", [
    (dict(weight_bits=4, recurrent_bits=2, narrow_range=True), dict(W=(2, -1, 1), U=(4, -7, 7))),
    (dict(weight_bits=3, input_weight_bits=6), dict(W=(3, -4, 3), U=(6, -32, 31))),
    (dict(weight_bits=1, input_weight_bits=8, narrow_range=True), dict(W=(1, -1, 1), U=(8, -127, 127))),
])
def test_per_tensor_widths_and_narrow_range(kw, bits):
    task = make_task("copy", length=25)
    torch.manual_seed(3)
    model = QORNN(task.input_size, 9, task.output_size, **kw)
    art, fp = export_model(model, task, act_bits=6, input_bits=8)
    for name, (k, lo, hi) in bits.items():
        assert art.bits_of(name) == k and art.code_range(name) == (lo, hi)
        t = getattr(art, name)
        assert lo <= t.min() and t.max() <= hi
    if kw.get("narrow_range") and art.recurrent_bits == 2:
        assert set(np.unique(art.W)) <= {-1, 0, 1}   # ternary
    # the fake-quantized weights are exactly codes x scale (in the forward pass's float32)
    w = model.effective_weights()
    for name, scale in (("W", art.w_scale), ("U", art.u_scale)):
        codes = torch.from_numpy(getattr(art, name).astype(np.float32))
        assert torch.equal(w[name].detach(), codes * torch.tensor(scale, dtype=torch.float32))
    x = np.random.default_rng(2).integers(-art.x_max, art.x_max + 1, size=(3, 40, art.input_size))
    ref = simulate(art, x)
    y, h = run_onnx(onnx_bytes(art), x)
    assert np.array_equal(y, ref.output) and np.array_equal(h, ref.hidden)
    assert fp["integer_bytes"] * 8 >= 81 * art.recurrent_bits + 9 * art.input_size * art.input_weight_bits
