"""The integer-aware training options as a user runs them: qornn train -> export -> simulate."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from qornn.cli import main
from qornn.export.artifact import load_artifact
from qornn.export.simulator import simulate
from qornn.train.checkpoint import load_run


@pytest.fixture(scope="module")
def po2_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("qat")
    run, art = d / "run", d / "art"
    assert main(["train", "--task", "copy", "--length", "24", "--hidden", "12", "--weight-bits", "4",
                 "--act-bits", "8", "--weight-scale", "po2", "--spectral-scale", "--rounding", "stochastic",
                 "--quant-noise", "0.5", "--steps", "15", "--lr", "5e-3", "--out", str(run)]) == 0
    assert main(["export", str(run), "--out", str(art)]) == 0
    return d, run, art


def test_po2_run_exports_its_trained_scales_and_runs_bit_exactly(po2_run, capsys):
    d, run, art_dir = po2_run
    art = load_artifact(art_dir)
    spec = json.loads((art_dir / "qornn.json").read_text())
    assert spec["scales"]["mode"] == "po2" and spec["requant"]["m_w"] == 1 and spec["requant"]["m_u"] == 1
    assert spec["bits"]["h"] == 8 and spec["bits"]["V"] == 8
    assert spec["provenance"]["scales"] == {"weights": "po2", "spectral": True, "hidden": "learned (lsq)",
                                            "input": "tracked (running max)"}
    model, task, cfg = load_run(run)
    assert cfg["model"]["act_bits"] == 8 and model.scales()["hidden"] == art.hidden_scale
    x, _ = task.batch(16, np.random.default_rng(0))
    with torch.no_grad():
        _, H = model(x.double() if model.W.dtype == torch.float64 else x, return_hidden=True)
    sim = simulate(art, x.numpy().astype(np.float64))
    assert np.array_equal((H.double() / art.hidden_scale).numpy().astype(np.int64), sim.hidden)


def test_export_refuses_a_different_hidden_width_unless_calibrated(po2_run, tmp_path, capsys):
    _, run, _ = po2_run
    assert main(["export", str(run), "--act-bits", "6", "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "differs from the hidden-state QAT training" in err
    assert not (tmp_path / "a").exists()
    assert main(["export", str(run), "--act-bits", "6", "--calibrate", "--out", str(tmp_path / "b")]) == 0
    art = load_artifact(tmp_path / "b")
    assert art.act_bits == 6 and art.scale_mode == "po2" and art.provenance["scales"]["hidden"] == "calibrated"


def test_post_hoc_po2_and_spectral_export_of_a_plain_run(tmp_path):
    run = tmp_path / "r"
    assert main(["train", "--task", "copy", "--length", "24", "--hidden", "10", "--steps", "0", "--out", str(run)]) == 0
    assert main(["export", str(run), "--weight-scale", "po2", "--spectral-scale", "--out", str(tmp_path / "a")]) == 0
    art = load_artifact(tmp_path / "a")
    assert art.scale_mode == "po2" and art.m_w == art.m_u == 1 and art.provenance["calibration"] is not None
    w = art.W.astype(np.float64) * art.w_scale
    assert np.linalg.norm(w, 2) <= 1.0


@pytest.mark.parametrize("args, msg", [
    (["--act-bits", "8", "--method", "fp"], "needs a QAT method"),
    (["--act-scale", "ema", "--act-bits", "8"], "unknown act scale"),
    (["--weight-scale", "log"], "unknown weight scale"),
    (["--rounding", "up"], "rounding must be"),
    (["--quant-noise", "1.5"], "rate in [0, 1)"),
    (["--act-bits", "2"], "act bits >= 3"),
])
def test_bad_options_one_line(tmp_path, capsys, args, msg):
    out = tmp_path / "r"
    argv = ["train", "--task", "copy", "--length", "24", "--hidden", "4", "--steps", "0", "--out", str(out), *args]
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse's usage errors
        rc = e.code
    err = capsys.readouterr().err
    assert rc == 2 and err.strip().count("\n") == 0 and msg in err
    assert not out.exists()


def test_bad_option_in_a_real_process_no_traceback(tmp_path):
    out = tmp_path / "r"
    p = subprocess.run([sys.executable, "-m", "qornn.cli", "train", "--task", "copy", "--length", "24", "--steps",
                        "0", "--act-bits", "8", "--method", "ptq-projunn", "--out", str(out)],
                       capture_output=True, text=True)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "Traceback" not in p.stderr
    assert not out.exists()


def test_resume_refuses_other_qat_settings_and_target_sqnr_needs_calibrate(tmp_path, capsys):
    from qornn.train import QORNN
    from qornn.train.resume import partial_dir
    from qornn.train.tasks import make_task
    from qornn.train.trainer import train

    class Stop(Exception):
        pass

    run = tmp_path / "run"
    task = make_task("copy", length=24)
    model = QORNN(task.input_size, 8, task.output_size, weight_bits=4, act_bits=6, output_mode=task.output_mode)
    orig, calls = task.batch, {"n": 0}

    def batch(*a):
        calls["n"] += 1
        if calls["n"] == 12:
            raise Stop
        return orig(*a)
    task.batch = batch
    with pytest.raises(Stop):
        train(model, task, 30, run, batch_size=4, progress=False, checkpoint_every=5)
    assert partial_dir(run).is_dir()
    assert main(["train", "--resume", str(run), "--act-bits", "4"]) == 2
    assert "--act-bits 4 conflicts with the saved act_bits 6" in capsys.readouterr().err
    assert main(["train", "--resume", str(run), "--weight-scale", "po2"]) == 2
    assert "weight_scale" in capsys.readouterr().err
    assert main(["train", "--resume", str(run), "--act-bits", "6"]) == 0
    capsys.readouterr()
    art = tmp_path / "art"
    assert main(["export", str(run), "--out", str(art), "--target-sqnr", "30"]) == 2
    err = capsys.readouterr().err
    assert "--act-bits 6" in err and "--calibrate" in err and not art.exists()
    assert main(["export", str(run), "--out", str(art), "--target-sqnr", "10", "--calibrate"]) == 0
    capsys.readouterr()
    assert main(["export", str(run), "--out", str(tmp_path / "b"), "--act-bits", "7"]) == 2
    assert "differs from the hidden-state QAT training" in capsys.readouterr().err


@pytest.mark.parametrize("key, value", [("act_bits", "8"), ("act_bits", 1.5), ("input_bits", None),
                                        ("act_scale", 3), ("spectral_scale", "yes"), ("quant_noise", "0.1"),
                                        ("weight_scale", "median"), ("quant_noise", 2.0), ("act_bits", 1)])
def test_edited_qat_fields_of_a_run_are_one_line_errors(po2_run, tmp_path, key, value, capsys):
    import shutil

    _, run, _ = po2_run
    bad = tmp_path / "bad"
    shutil.copytree(run, bad)
    cfg = json.loads((bad / "config.json").read_text())
    cfg["model"][key] = value
    (bad / "config.json").write_text(json.dumps(cfg))
    assert main(["export", str(bad), "--out", str(tmp_path / "art")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("qornn: error:") and len(err.splitlines()) == 1
    assert not (tmp_path / "art").exists()
