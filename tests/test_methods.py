"""Every training method trains, exports and simulates on every task (a few steps, tiny data)."""

import numpy as np
import pytest
import torch

from qornn.errors import QornnError
from qornn.export.evaluate import evaluate_artifact
from qornn.export.exporter import export_model
from qornn.export.simulator import simulate
from qornn.train import QORNN
from qornn.train.checkpoint import load_run
from qornn.train.model import METHODS
from qornn.train.projunn import projunn_update
from qornn.train.tasks import make_task
from qornn.train.trainer import train


def tiny_task(name):
    rng = np.random.default_rng(0)
    if name in ("smnist", "pmnist"):
        imgs = lambda n: rng.integers(0, 256, size=(n, 784), dtype=np.uint8)  # noqa: E731
        return make_task(name, pixels_per_step=49, data=(imgs(40), rng.integers(0, 10, 40), imgs(20), rng.integers(0, 10, 20)))
    if name == "ptb-char":
        return make_task(name, length=12, data=(rng.integers(0, 7, 500), rng.integers(0, 7, 200), "abcdef_"))
    return make_task(name, length=25)


TASKS = ["copy", "adding", "smnist", "pmnist", "ptb-char"]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("task_name", TASKS)
def test_method_on_task_trains_exports_simulates(tmp_path, method, task_name):
    task = tiny_task(task_name)
    torch.manual_seed(0)
    model = QORNN(task.input_size, 8, task.output_size, weight_bits=3, method=method, output_mode=task.output_mode)
    final = train(model, task, 3, tmp_path / "run", batch_size=8, progress=False)
    assert np.isfinite(final["quantized"][task.metric])
    model.eval()
    art, fp = export_model(model, task, act_bits=10)
    x, _ = task.batch(2, np.random.default_rng(1))
    res = simulate(art, x.numpy().astype(np.float64))
    assert res.output.shape[0] == 2 and res.output.dtype == np.int64
    assert np.isfinite(evaluate_artifact(art, task, batches=1, batch_size=4)[task.metric])
    if method.endswith("projunn"):  # projUNN keeps the latent matrix orthogonal throughout training
        w = model.W.detach().double()
        assert torch.linalg.matrix_norm(w.t() @ w - torch.eye(8, dtype=torch.float64)) < 1e-4


@pytest.mark.parametrize("mode", ["D", "T"])
def test_projunn_update_is_orthogonal_and_follows_the_update(mode):
    torch.manual_seed(0)
    w0 = torch.linalg.qr(torch.randn(20, 20, dtype=torch.float64))[0]
    u, v = torch.randn(20, 1, dtype=torch.float64), torch.randn(20, 1, dtype=torch.float64)
    step = 1e-3 * (u @ v.t() - v @ u.t()) @ w0  # a rank-2 step along the tangent space at w0
    w1 = projunn_update(w0, w0 + step, rank=2, mode=mode)
    assert torch.linalg.matrix_norm(w1.t() @ w1 - torch.eye(20, dtype=torch.float64)) < 1e-10
    # a tangent step is kept up to second order; its normal part would be removed
    assert torch.linalg.matrix_norm(w1 - (w0 + step)) < 1e-2 * torch.linalg.matrix_norm(step)
    w2 = projunn_update(w0, w0 + step + 1e-3 * w0, rank=2, mode=mode)  # + a normal (scaling) part
    assert torch.linalg.matrix_norm(w2 - w1) < 1e-2 * torch.linalg.matrix_norm(step)


def test_ste_pen_penalty_lowers_orthogonality_error(tmp_path):
    task = tiny_task("copy")
    errs = {}
    for pen in (0.0, 5.0):
        torch.manual_seed(0)
        model = QORNN(task.input_size, 16, task.output_size, weight_bits=4, method="ste-pen", penalty=pen)
        with torch.no_grad():
            model.W.mul_(1.5)  # start far from orthogonal
        train(model, task, 40, tmp_path / f"p{pen}", batch_size=8, progress=False, lr=1e-2)
        wq = model.effective_weights()["W"].detach()
        errs[pen] = float(torch.linalg.matrix_norm(wq.t() @ wq - torch.eye(16)))
    assert errs[5.0] < errs[0.0]


@pytest.mark.parametrize("kwargs, msg", [
    (dict(method="ste-projunn", projunn_rank=9), "projUNN rank"),
    (dict(method="ste-projunn", projunn_mode="X"), "projUNN mode"),
    (dict(method="ste-pen", penalty=-1.0), "penalty"),
    (dict(method="ste-bjorck", weight_bits=None), "give weight bits"),
    (dict(method="nope"), "unknown method"),
])
def test_nonsense_method_options(kwargs, msg):
    with pytest.raises(QornnError, match=msg):
        QORNN(3, 8, 2, **({"weight_bits": 4} | kwargs))


def test_ptq_methods_train_in_full_precision(tmp_path):
    task = tiny_task("copy")
    model = QORNN(task.input_size, 8, task.output_size, weight_bits=2, method="ptq-projunn")
    assert not model.train_quantized
    train(model, task, 2, tmp_path / "r", batch_size=4, progress=False)
    again, _, cfg = load_run(tmp_path / "r")
    assert cfg["model"]["method"] == "ptq-projunn" and again.projunn_mode == "D"
