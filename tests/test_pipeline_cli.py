"""The spine as a user runs it: qornn train -> export -> simulate, and bad input on each step."""

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
def spine(tmp_path_factory):
    d = tmp_path_factory.mktemp("spine")
    run, art = d / "r", d / "a"
    assert main(["train", "--task", "copy", "--method", "ste-bjorck", "--hidden", "37", "--weight-bits", "3",
                 # the copy recipe starts V at 0: an untrained model needs a read-out to compare
                 "--output-init", "kaiming-uniform", "--steps", "0", "--seed", "11", "--out", str(run)]) == 0
    assert main(["export", str(run), "--act-bits", "9", "--out", str(art)]) == 0
    return d, run, art


def test_done_when_command_sequence(spine):
    d, run, art = spine
    rng = np.random.default_rng(0)
    x = np.eye(10)[rng.integers(0, 10, size=(4, 50))]
    np.save(d / "x.npy", x)
    assert main(["simulate", str(art), "--input", str(d / "x.npy"), "--out", str(d / "y.npy")]) == 0
    y = np.load(d / "y.npy")
    assert y.shape == (4, 50, 9) and y.dtype == np.int64
    assert np.array_equal(y, simulate(load_artifact(art), x).output)


def test_checkpoint_round_trip(spine, tmp_path):
    _, run, _ = spine
    model, task, cfg = load_run(run)
    x, _ = task.batch(2, np.random.default_rng(0))
    assert cfg["model"]["hidden_size"] == 37 and cfg["model"]["weight_bits"] == 3
    again, _, _ = load_run(run)
    assert torch.equal(model(x), again(x))


def test_training_writes_metrics_and_learns_something(tmp_path):
    out = tmp_path / "r"
    assert main(["train", "--task", "copy", "--length", "25", "--hidden", "16", "--steps", "30",
                 "--out", str(out)]) == 0
    lines = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 30 and lines[-1]["loss"] < lines[0]["loss"]
    assert {"sigma_min", "sigma_max", "orth_err", "eval_accuracy"} <= set(lines[-1])


def test_integer_simulator_tracks_fake_quantized_model(spine):
    """With 16-bit activations the integer loop differs from the float loop only by rounding."""
    _, run, _ = spine
    from qornn.export.exporter import export_model

    model, task, _ = load_run(run)
    art, _ = export_model(model, task, act_bits=16)
    x, _ = task.batch(4, np.random.default_rng(3))
    with torch.no_grad():
        ref = model(x).numpy()
    got = simulate(art, x.numpy().astype(np.float64)).output_real
    assert np.abs(got - ref).max() < 0.02 * np.abs(ref).max()


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "qornn.cli", *args], capture_output=True, text=True, cwd=cwd)


@pytest.mark.parametrize("args, msg", [
    (["train", "--hidden", "0", "--steps", "0", "--out", "{d}/o"], "hidden"),
    (["train", "--weight-bits", "9", "--steps", "0", "--out", "{d}/o"], "weight bits"),
    (["train", "--task", "nope", "--steps", "0", "--out", "{d}/o"], "unknown task"),
    (["train", "--method", "nope", "--steps", "0", "--out", "{d}/o"], "unknown method"),
    (["export", "{d}/missing", "--out", "{d}/o"], "not found"),
    (["export", "{run}", "--act-bits", "1", "--out", "{d}/o"], "activation bits"),
    (["export", "{run}", "--act-bits", "17", "--out", "{d}/o"], "activation bits"),
    (["export", "{run}", "--out", "{art}"], "--force"),
    (["simulate", "{art}", "--input", "{d}/bad_shape.npy", "--out", "{d}/y.npy"], "shape"),
    (["simulate", "{art}", "--input", "{d}/nan.npy", "--out", "{d}/y.npy"], "NaN"),
    (["simulate", "{art}", "--input", "{d}/garbage.npy", "--out", "{d}/y.npy"], "not a readable"),
    (["simulate", "{d}/missing", "--input", "{d}/nan.npy", "--out", "{d}/y.npy"], "not found"),
])
def test_bad_input_one_line_error(spine, tmp_path, args, msg):
    d, run, art = spine
    np.save(tmp_path / "bad_shape.npy", np.zeros((2, 5, 3)))
    np.save(tmp_path / "nan.npy", np.full((1, 5, 10), np.nan))
    (tmp_path / "garbage.npy").write_bytes(b"\x00garbage")
    args = [a.format(d=tmp_path, run=run, art=art) for a in args]
    p = run_cli(*args)
    assert p.returncode == 2, p.stderr
    assert p.stderr.count("\n") == 1 and "Traceback" not in p.stderr and msg in p.stderr, p.stderr
    assert not (tmp_path / "o").exists() and not (tmp_path / "y.npy").exists()
    assert not [q for q in tmp_path.iterdir() if q.name.startswith(".")]


def test_corrupt_checkpoint_rejected(spine, tmp_path):
    _, run, _ = spine
    bad = tmp_path / "run"
    bad.mkdir()
    for f in run.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    (bad / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{bad json")
    p = run_cli("export", str(bad), "--out", str(tmp_path / "o"))
    assert p.returncode == 2 and "corrupt weights" in p.stderr and "Traceback" not in p.stderr
    nan = torch.full((37, 37), float("nan"))
    from safetensors.torch import load_file, save_file
    state = load_file(str(run / "model.safetensors"))
    state["W"] = nan
    save_file(state, str(bad / "model.safetensors"))
    p = run_cli("export", str(bad), "--out", str(tmp_path / "o"))
    assert p.returncode == 2 and "NaN" in p.stderr, p.stderr
