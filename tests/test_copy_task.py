import math

import numpy as np
import pytest
import torch

from qornn.errors import QornnError
from qornn.train.tasks import make_task


def test_layout_and_targets():
    t = make_task("copy", length=30)
    inp, tgt = t.tokens(5, np.random.default_rng(0))
    assert inp.shape == tgt.shape == (5, 30)
    assert (inp[:, :10] >= 1).all() and (inp[:, :10] <= 8).all()
    assert (inp[:, 10:19] == 0).all() and (inp[:, 19] == 9).all() and (inp[:, 20:] == 0).all()
    assert (tgt[:, :20] == 0).all() and (tgt[:, 20:] == inp[:, :10]).all()
    x, y = t.batch(5, np.random.default_rng(0))
    assert x.shape == (5, 30, 10) and x.dtype == torch.float32 and (x.sum(-1) == 1).all()
    assert torch.equal(x.argmax(-1), torch.from_numpy(inp))


def test_deterministic_for_a_seed():
    t = make_task("copy", length=40, alphabet=4, recall=5)
    a = t.batch(3, np.random.default_rng(7))
    b = t.batch(3, np.random.default_rng(7))
    c = t.batch(3, np.random.default_rng(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and not torch.equal(a[0], c[0])
    assert t.input_size == 6 and t.output_size == 5


def test_metrics_and_baseline():
    t = make_task("copy", length=30)
    x, y = t.batch(16, np.random.default_rng(1))
    perfect = torch.nn.functional.one_hot(y, t.output_size).float() * 50
    m = t.metrics(perfect, y)
    assert m["accuracy"] == 1.0 and m["loss"] < 1e-6
    assert math.isclose(t.baseline(), 10 * math.log(8) / 30)
    # the naive strategy (blank, then uniform over symbols) scores exactly the baseline
    naive = torch.full((16, 30, 9), -1e9)
    naive[:, :20, 0] = 0
    naive[:, 20:, 1:] = 0
    assert abs(t.metrics(naive, y)["loss"] - t.baseline()) < 1e-6


def test_bad_length():
    with pytest.raises(QornnError, match="length"):
        make_task("copy", length=20)
    with pytest.raises(QornnError, match="unknown task"):
        make_task("nope")
