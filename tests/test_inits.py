"""Recurrent inits (train/inits.py), the null input, and the task recipes (train/recipes.py).

A grid init must give codes C of q(W) with C^T C = c I exactly (integers), at every width, range
and scale mode it claims (`grid_support` is None), and be refused where it does not hold."""

import itertools
import math

import numpy as np
import pytest
import torch

from qornn.errors import QornnError
from qornn.train import QORNN
from qornn.train.inits import GRID_INITS, RECURRENT_INITS, grid_support, rotation_codes
from qornn.train.model import LAYER_INITS
from qornn.train.recipes import RECIPES, recipe

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIZES = (1, 2, 3, 7, 8, 16, 33)


def _model(init, bits, narrow, scale, n, seed=0, **kw):
    torch.manual_seed(seed)
    return QORNN(3, n, 2, weight_bits=bits, narrow_range=narrow, weight_scale=scale, recurrent_init=init, **kw)


def _codes(m):
    m.eval()
    if hasattr(m, "scales_ready"):
        m(torch.ones(1, 2, 3))  # learned scales start where the first quantized forward puts them
    _, codes, scale = m.quantized_weights()["W"]
    return codes.double().numpy(), float(scale)


@pytest.mark.parametrize("init", GRID_INITS)
def test_grid_inits_are_exactly_orthogonal_wherever_claimed(init):
    claimed = 0
    for bits, narrow, scale, n in itertools.product(range(1, 9), (False, True), ("max", "lsq", "po2"), SIZES):
        if bits == 1 and narrow:
            continue
        why = grid_support(init, bits, narrow, scale, n)
        if why is not None:
            with pytest.raises(QornnError, match="recurrent init"):
                _model(init, bits, narrow, scale, n)
            continue
        claimed += 1
        c, s = _codes(_model(init, bits, narrow, scale, n, seed=bits + n))
        assert np.array_equal(c, np.round(c))
        g = (c.T @ c).astype(np.int64)  # integer Gram matrix, compared exactly
        k = int(g[0, 0])
        assert k > 0 and np.array_equal(g, k * np.eye(n, dtype=np.int64)), (bits, narrow, scale, n)
        # the scale is 1/sqrt(c) to float32 precision (a learned scale passes through log2 and exp2)
        assert abs(s * s * k - 1) < 1e-5
    assert claimed > 0


def test_which_widths_admit_which():
    """The table of docs/results.md: permutation at 2..8 bits in every mode, rotation-grid and hadamard
    with narrow range and max/lsq scales, hadamard alone at 1 bit."""
    for bits in range(2, 9):
        for narrow, scale in itertools.product((False, True), ("max", "lsq", "po2")):
            assert grid_support("permutation", bits, narrow, scale, 16) is None
        assert grid_support("rotation-grid", bits, True, "max", 16) is None
        assert grid_support("rotation-grid", bits, False, "max", 16) is not None
        assert grid_support("rotation-grid", bits, True, "po2", 16) is not None
        assert grid_support("hadamard", bits, True, "lsq", 16) is None
    assert grid_support("hadamard", 1, False, "max", 16) is None
    assert grid_support("hadamard", 4, True, "max", 12) is not None
    assert grid_support("hadamard", 1, False, "po2", 16) is None and grid_support("hadamard", 1, False, "po2", 8)
    assert grid_support("permutation", 1, False, "max", 16) is not None


def test_rotation_grid_has_real_angles_from_four_bits():
    for bits in range(4, 9):
        top = 2 ** (bits - 1) - 1
        c, pairs = rotation_codes(top)
        assert all(a * a + b * b == c and max(a, b) <= top for a, b in pairs)
        assert any(0 < a < top and 0 < b < top for a, b in pairs), bits  # an angle that is not a multiple of 90
    m = _model("rotation-grid", 5, True, "max", 16)
    c, _ = _codes(m)
    assert set(np.abs(c[c != 0]).astype(int)) - {15} == {9, 12}  # 225 = 9^2 + 12^2 = 15^2


@pytest.mark.parametrize("init", ("orthogonal", "henaff", "cayley"))
@pytest.mark.parametrize("n", (1, 2, 7, 16))
def test_float_inits_are_orthogonal(init, n):
    torch.manual_seed(1)
    m = QORNN(3, n, 2, weight_bits=None, method="fp", recurrent_init=init)
    w = m.W.detach().double()
    assert torch.allclose(w.t() @ w, torch.eye(n, dtype=torch.float64), atol=1e-5)


def test_cayley_and_henaff_are_rotation_blocks_with_their_angle_ranges():
    torch.manual_seed(3)
    n = 64
    for init, lo, hi in (("henaff", -math.pi, math.pi), ("cayley", 0.0, math.pi / 2)):
        w = QORNN(3, n, 2, weight_bits=None, method="fp", recurrent_init=init).W.detach().double()
        idx = torch.arange(0, n, 2)
        theta = torch.atan2(w[idx + 1, idx], w[idx, idx])
        assert float(theta.min()) >= lo - 1e-6 and float(theta.max()) <= hi + 1e-6
        off = w.clone()
        off[idx, idx] = off[idx, idx + 1] = off[idx + 1, idx] = off[idx + 1, idx + 1] = 0
        assert float(off.abs().max()) < 1e-6


@pytest.mark.parametrize("init", RECURRENT_INITS)
def test_inits_are_seeded(init):
    kw = dict(init=init, bits=5, narrow=True, scale="max", n=16)
    a, b, c = _model(**kw, seed=4), _model(**kw, seed=4), _model(**kw, seed=5)
    assert torch.equal(a.W, b.W) and torch.equal(a.U, b.U)
    assert not torch.equal(a.W, c.W) or init == "hadamard" and torch.equal(a.W.abs(), c.W.abs())


def test_the_cli_spells_the_same_choices():
    from qornn import cli

    from qornn.train.config import READOUT_INITS
    from qornn.train.recipes import RECIPE_CHOICES

    assert cli.RECURRENT_INITS == RECURRENT_INITS and cli.LAYER_INITS == LAYER_INITS
    assert cli.READOUT_INITS == READOUT_INITS and cli.RECIPE_CHOICES == RECIPE_CHOICES


def test_layer_inits():
    torch.manual_seed(0)
    m = QORNN(10, 32, 9, input_init="kaiming-normal", output_init="zeros")
    assert float(m.V.abs().max()) == 0.0
    assert abs(float(m.U.std()) - math.sqrt(2 / 10)) < 0.1


def test_null_input_column_is_zero_and_stays_zero():
    from qornn.train.tasks.copy import CopyTask

    torch.manual_seed(0)
    task = CopyTask(30)
    m = QORNN(task.input_size, 16, task.output_size, weight_bits=5, narrow_range=True, act_bits=8,
              recurrent_init="permutation", null_input=0)
    assert float(m.U[:, 0].abs().max()) == 0.0
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    rng = np.random.default_rng(0)
    before = m.U.detach().clone()
    for _ in range(5):
        x, y = task.batch(8, rng)
        opt.zero_grad()
        task.loss(m(x), y).backward()
        opt.step()
    assert float(m.U[:, 0].abs().max()) == 0.0  # exactly: its gradient is masked
    assert not torch.equal(m.U[:, 1:], before[:, 1:])  # the other columns train
    assert float(m.quantized_weights()["U"][1][:, 0].abs().max()) == 0.0


@pytest.mark.parametrize("bad", (-1, 3, 2.0, True, "0"))
def test_null_input_bad_values(bad):
    with pytest.raises(QornnError, match="null input"):
        QORNN(3, 4, 2, null_input=bad)


@pytest.mark.parametrize("kw,match", [
    (dict(recurrent_init="haar"), "unknown recurrent init"),
    (dict(input_init="xavier"), "unknown input init"),
    (dict(output_init=None), "unknown output init"),
    (dict(recurrent_init="hadamard", weight_bits=None, method="fp"), "power-of-two"),
    (dict(recurrent_init="rotation-grid", narrow_range=False), "narrow-range"),
    (dict(recurrent_init="permutation", weight_bits=1), "only hadamard"),
])
def test_bad_init_settings(kw, match):
    with pytest.raises(QornnError, match=match):
        QORNN(3, 6, 2, **kw)


# -- recipes --------------------------------------------------------------------------------
def test_copy_recipe_defaults_and_what_overrides_them():
    r = recipe("copy", {"weight_bits": 5})
    assert r["recurrent_init"] == "permutation" and r["narrow_range"] is True and r["null_input"] == 0
    assert r["orth_lr"] == 1e-5 and r["lr"] == 2e-3 and r["clip_grad"] == 0.0 and r["output_init"] == "zeros"
    given = {"weight_bits": 5, "lr": 1e-3, "recurrent_init": "henaff", "narrow_range": False}
    r = recipe("copy", given)
    assert "lr" not in r and "recurrent_init" not in r and "narrow_range" not in r
    # one bit: no narrow range (the spec has none), and the only grid init exact there
    r = recipe("copy", {"weight_bits": 1})
    assert r["recurrent_init"] == "hadamard" and r["narrow_range"] is False
    assert recipe("copy", {"weight_bits": 1, "hidden": 12})["recurrent_init"] == "orthogonal"
    assert recipe("copy", {"weight_bits": 4, "output_bits": 1})["narrow_range"] is False
    # a schedule (or budget) the user gives replaces the recipe's whole schedule (budget)
    r = recipe("copy", {"lr_schedule": "step"})
    assert not {"lr_decay_every", "lr_decay"} & set(r) and "steps" in r
    assert "steps" not in recipe("copy", {"epochs": 2}) and "lr_decay" not in recipe("copy", {"lr_decay": 0.5})
    assert recipe("copy", {}, "none") == {} and recipe("adding", {}) == recipe("adding", {}, "task")
    with pytest.raises(QornnError, match="unknown recipe"):
        recipe("copy", {}, "fast")


def test_pmnist_recipe():
    r = recipe("pmnist", {"weight_bits": 4})
    assert r["hidden"] == 170 and r["recurrent_init"] == "permutation" and r["readout_init"] == "lstsq"
    assert r["epochs"] == 2 and "steps" not in recipe("pmnist", {"steps": 5})
    assert "epochs" not in recipe("pmnist", {"steps": 5})


def test_every_recipe_key_is_a_train_option():
    from qornn.cli import TRAIN_OPTIONS

    for task, r in RECIPES.items():
        assert set(r) <= set(TRAIN_OPTIONS), task


def _cli_run(tmp_path, *argv):
    import json

    from qornn.cli import main

    out = tmp_path / "run"
    try:
        code = main(["train", "--out", str(out), "--steps", "1", *map(str, argv)])
    except SystemExit as e:  # argparse
        code = e.code
    return code, (json.loads((out / "config.json").read_text()) if code == 0 else None)


def test_cli_uses_the_recipe_records_it_and_lets_options_win(tmp_path):
    code, cfg = _cli_run(tmp_path, "--task", "copy", "--length", "25", "--hidden", "8", "--weight-bits", "5")
    assert code == 0
    assert cfg["model"]["recurrent_init"] == "permutation" and cfg["model"]["null_input"] == 0
    assert cfg["model"]["narrow_range"] is True and cfg["train"]["orth_lr"] == 1e-5
    code, cfg = _cli_run(tmp_path / "b", "--task", "copy", "--length", "25", "--hidden", "8", "--recipe", "none")
    assert code == 0
    assert cfg["model"]["recurrent_init"] == "orthogonal" and cfg["model"]["null_input"] is None
    assert cfg["train"]["orth_lr"] is None and cfg["train"]["clip_grad"] == 1.0
    code, cfg = _cli_run(tmp_path / "c", "--task", "copy", "--length", "25", "--hidden", "8",
                         "--recurrent-init", "cayley", "--clip-grad", "0.5", "--null-input", "3")
    assert code == 0
    assert cfg["model"]["recurrent_init"] == "cayley" and cfg["model"]["null_input"] == 3
    assert cfg["train"]["clip_grad"] == 0.5


@pytest.mark.parametrize("argv,match", [
    (("--recurrent-init", "haar"), "invalid choice"),
    (("--input-init", "x"), "invalid choice"),
    (("--recipe", "best"), "invalid choice"),
    (("--null-input", "10"), "null input"),
    (("--threads", "0"), "--threads"),
    (("--recurrent-init", "rotation-grid", "--recipe", "none"), "narrow-range"),
])
def test_cli_bad_init_options_are_one_line(tmp_path, capsys, argv, match):
    code, _ = _cli_run(tmp_path, "--task", "copy", "--length", "25", "--hidden", "8", *argv)
    err = capsys.readouterr().err.strip()
    assert code == 2 and match in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists() and not (tmp_path / "run.partial").exists()


def test_resume_keeps_init_fields(tmp_path):
    """A run killed before its first checkpoint restarts from the seeded init: the new fields are in
    the plan, and the rebuilt model is the same."""
    import json

    from qornn.train.checkpoint import build_model

    code, cfg = _cli_run(tmp_path, "--task", "copy", "--length", "25", "--hidden", "8", "--weight-bits", "4")
    assert code == 0
    torch.manual_seed(cfg["train"]["seed"])
    m = build_model(cfg["model"], "x")
    torch.manual_seed(cfg["train"]["seed"])
    again = build_model(json.loads(json.dumps(cfg["model"])), "x")
    assert torch.equal(m.W, again.W) and m.recurrent_init == "permutation" and m.null_input == 0


# -- qornn report: what q(W) does to a memory -------------------------------------------------
def test_power_gains_and_forgetting_step():
    from qornn.train.report import forgets_after, power_gains

    w = torch.diag(torch.tensor([1.0, 0.99, 1.01]))
    ts, lo, hi = power_gains(w, 1000)
    assert ts[0] == 1 and ts[-1] == 1000
    assert np.allclose(lo, 0.99 ** ts) and np.allclose(hi, 1.01 ** ts)
    # 0.99^t < 1/2 from t = 69, 1.01^t > 2 from t = 70: the first sampled step past 69
    t = forgets_after(ts, lo, hi)
    assert t == min(x for x in ts if 0.99 ** x < 0.5)
    assert forgets_after(*power_gains(torch.eye(4), 1000)) is None


def test_report_draws_memory_and_names_the_forgetting_step(tmp_path):
    from qornn.cli import main

    haar, grid = tmp_path / "haar", tmp_path / "grid"
    common = ["train", "--task", "copy", "--length", "400", "--hidden", "32", "--weight-bits", "4", "--steps", "0"]
    assert main([*common, "--recipe", "none", "--out", str(haar)]) == 0
    assert main([*common, "--out", str(grid)]) == 0
    for run in (haar, grid):
        assert main(["report", str(run)]) == 0
        assert (run / "memory.png").stat().st_size > 10_000
    assert "some direction is shrunk or grown 2x by step" in (haar / "report.md").read_text()
    assert "no direction is shrunk or grown 2x within 400 steps" in (grid / "report.md").read_text()


# -- read-out warm start (train/readout.py) ----------------------------------------------------
def _tiny_pmnist():
    from qornn.train.tasks import make_task

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 300)
    imgs = (rng.random((300, 784)) * 60).astype(np.uint8)
    imgs[np.arange(300), labels * 70 + 5] = 255  # a class-dependent bright pixel: linearly separable
    return make_task("pmnist", pixels_per_step=49, data=(imgs[:200], labels[:200], imgs[200:], labels[200:]))


@pytest.mark.parametrize("act_bits", (None, 8))
def test_readout_fit_is_a_warm_start_and_seeded(act_bits):
    from qornn.train.readout import fit_readout
    from qornn.train.trainer import evaluate

    task = _tiny_pmnist()

    def fitted(seed):
        torch.manual_seed(0)
        m = QORNN(task.input_size, 32, 10, weight_bits=4, narrow_range=True, act_bits=act_bits,
                  output_mode="last_step", recurrent_init="permutation")
        before = evaluate(m, task, batches=None)
        summary = fit_readout(m, task, seed, sequences=256, batch=64)
        return m, before, summary

    m, before, summary = fitted(3)
    after = evaluate(m, task, batches=None)
    assert summary["rows"] == 256 and summary["temperature"] > 1
    assert after["accuracy"] > max(0.5, before["accuracy"] + 0.2), (before, after)
    again, _, _ = fitted(3)
    other, _, _ = fitted(4)
    assert torch.equal(m.V, again.V) and torch.equal(m.c, again.c) and not torch.equal(m.V, other.V)


def test_readout_fit_regression_task():
    from qornn.train.readout import fit_readout
    from qornn.train.tasks import make_task
    from qornn.train.trainer import evaluate

    task = make_task("adding", length=20)
    torch.manual_seed(0)
    m = QORNN(2, 32, 1, weight_bits=None, method="fp", output_mode="last_step", activation="relu")
    before = evaluate(m, task, quantized=False)["mse"]
    summary = fit_readout(m, task, 0, sequences=512)
    after = evaluate(m, task, quantized=False)["mse"]
    assert "fit_loss" not in summary and summary["temperature"] == 1.0
    assert after < min(before, task.baseline())


def test_readout_init_option_is_checked(tmp_path, capsys):
    from qornn.train.config import TrainConfig

    with pytest.raises(QornnError, match="readout_init"):
        TrainConfig.from_dict({"readout_init": "ridge"})
    code, _ = _cli_run(tmp_path, "--task", "copy", "--length", "25", "--readout-init", "qr")
    assert code == 2 and "invalid choice" in capsys.readouterr().err
    code, cfg = _cli_run(tmp_path / "ok", "--task", "adding", "--length", "20", "--hidden", "8", "--readout-init",
                         "lstsq")
    assert code == 0 and cfg["train"]["readout_init"] == "lstsq"


def test_lr_warmup_is_linear_then_the_schedule():
    from qornn.train.config import TrainConfig

    c = TrainConfig(lr_warmup=4, lr_schedule="step", lr_decay_every=10, lr_decay=0.5).validate()
    assert [c.lr_at(s, 1.0) for s in (1, 2, 3, 4, 10, 11)] == [0.25, 0.5, 0.75, 1.0, 1.0, 0.5]
    assert TrainConfig().lr_at(1, 2e-3) == 2e-3
    with pytest.raises(QornnError, match="lr_warmup"):
        TrainConfig.from_dict({"lr_warmup": -1})
