"""Crash-safe training: SIGKILL or Ctrl-C at any moment, then --resume, ends with the weights of an
uninterrupted run (torch.equal), for every method and optimizer; the resume state is validated."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from qornn.cli import main
from qornn.errors import QornnError
from qornn.train import QORNN
from qornn.train.resume import Partial
from qornn.train.tasks import make_task
from qornn.train.trainer import train

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
TRAIN = ["train", "--task", "copy", "--length", "25", "--hidden", "12", "--steps", "400",
         "--checkpoint-every", "15", "--seed", "3"]


def cli(*args, **kw):
    return subprocess.Popen([sys.executable, "-m", "qornn.cli", *args], env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def same_weights(a: Path, b: Path) -> bool:
    x, y = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    return sorted(x) == sorted(y) and all(torch.equal(x[k], y[k]) for k in x)


def records(run: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(l).items() if k != "time"} for l in (run / "metrics.jsonl").read_text().splitlines()]


def newest_step(pdir: Path) -> int:
    steps = [int(p.name[5:]) for p in (pdir / "checkpoints").glob("step-*")] if (pdir / "checkpoints").is_dir() else []
    return max(steps, default=-1)


def wait_for_checkpoint(pdir: Path, proc, after: int = 0, timeout: float = 120) -> bool:
    end = time.time() + timeout
    while time.time() < end and proc.poll() is None:
        if newest_step(pdir) > after:
            return True
        time.sleep(0.02)
    return False


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    ref = tmp_path_factory.mktemp("ref") / "run"
    p = cli(*TRAIN, "--out", str(ref))
    _, err = p.communicate()
    assert p.returncode == 0, err
    return ref


def test_sigkill_at_random_moments_then_resume_equals_uninterrupted(reference, tmp_path):
    run, pdir = tmp_path / "run", tmp_path / "run.partial"
    rnd = random.Random(8)
    p = cli(*TRAIN, "--out", str(run))
    kills = 0
    for _ in range(4):
        if wait_for_checkpoint(pdir, p, after=newest_step(pdir)):
            time.sleep(rnd.uniform(0, 0.4))  # somewhere inside a checkpoint interval, or inside a save
            p.send_signal(signal.SIGKILL)
            p.wait()
            kills += p.returncode == -signal.SIGKILL
        else:
            p.wait()
        assert not run.exists() or (run / "config.json").exists()  # RUN is absent or complete, never torn
        if run.exists():
            break
        p = cli("train", "--resume", str(run))
    p.communicate()
    if not run.exists():
        p = cli("train", "--resume", str(run))
        _, err = p.communicate()
        assert p.returncode == 0, err
    assert kills >= 2
    assert same_weights(reference, run)
    assert records(reference) == records(run)
    assert not pdir.exists() and not [q for q in tmp_path.iterdir() if q.name.startswith(".")]


def test_ctrl_c_checkpoints_then_resume_equals_uninterrupted(reference, tmp_path):
    run, pdir = tmp_path / "run", tmp_path / "run.partial"
    p = cli(*TRAIN, "--out", str(run))
    assert wait_for_checkpoint(pdir, p, after=30)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate()
    last = err.strip().splitlines()[-1]  # (above it: the progress bar)
    assert p.returncode == 130 and "Traceback" not in err, err
    assert last.startswith("qornn: interrupted; the checkpoint at step") and "--resume" in last
    # the unfinished run is refused by export and report, with the way out
    for cmd in (["export", str(run), "--out", str(tmp_path / "a")], ["report", str(run)]):
        q = cli(*cmd)
        _, e = q.communicate()
        assert q.returncode == 2 and "unfinished" in e and "--resume" in e and e.count("\n") == 1, e
    q = cli(*TRAIN, "--out", str(run))  # not silently restarted either
    _, e = q.communicate()
    assert q.returncode == 2 and "--resume" in e, e
    q = cli("train", "--resume", str(run), "--lr", "0.5")
    _, e = q.communicate()
    assert q.returncode == 2 and "conflicts" in e, e
    q = cli("train", "--resume", str(run), "--seed", "3", "--hidden", "12")  # agreeing options are fine
    _, e = q.communicate()
    assert q.returncode == 0, e
    assert same_weights(reference, run) and records(reference) == records(run)
    q = cli("train", "--resume", str(run))
    _, e = q.communicate()
    assert q.returncode == 2 and "already finished" in e


class Kill(BaseException):
    """Stands for SIGKILL inside one process: nothing after it runs in the training loop."""


def tiny(name):
    rng = np.random.default_rng(0)
    if name == "pmnist":
        imgs = lambda n: rng.integers(0, 256, size=(n, 784), dtype=np.uint8)  # noqa: E731
        return make_task(name, pixels_per_step=49, data=(imgs(40), rng.integers(0, 10, 40), imgs(20),
                                                          rng.integers(0, 10, 20)))
    return make_task(name, length=22)


@pytest.mark.parametrize("method, task_name, options, model_kw", [
    ("ste-bjorck", "copy", {}, {}),
    ("ste-projunn", "copy", dict(optimizer="rmsprop", orth_lr=1e-4, lr_schedule="step", lr_decay_every=7), {}),
    ("ste-pen", "adding", dict(clip_grad=0.0), {}),
    ("ptq-projunn", "copy", dict(optimizer="rmsprop"), {}),
    ("fp", "pmnist", dict(epochs=6, lr_schedule="step", lr_decay_every=5, lr_decay=0.5), {}),
    # integer-aware training: learned hidden/weight scales, a tracked maximum, random rounding and noise
    ("ste-bjorck", "copy", {}, dict(act_bits=6, weight_scale="lsq", rounding="stochastic", quant_noise=0.3)),
    ("ste-projunn", "copy", dict(optimizer="rmsprop"), dict(act_bits=5, act_scale="max", weight_scale="po2",
                                                            spectral_scale=True)),
    # the copy recipe (train/recipes.py): grid init, a null input column, V = 0, W's own rate
    ("ste-bjorck", "copy", dict(lr=2e-3, orth_lr=1e-5, clip_grad=0.0, lr_schedule="step", lr_decay_every=10),
     dict(act_bits=8, narrow_range=True, recurrent_init="permutation", input_init="kaiming-normal",
          output_init="zeros", null_input=0)),
    ("ste-bjorck", "copy", {}, dict(narrow_range=True, recurrent_init="rotation-grid", null_input=3)),
    ("ste-bjorck", "pmnist", dict(epochs=6, readout_init="lstsq"), dict(act_bits=8, recurrent_init="permutation")),
    ("ptq-projunn", "adding", dict(readout_init="lstsq"), {}),
])
def test_every_method_and_optimizer_resumes_bit_exactly(tmp_path, method, task_name, options, model_kw, monkeypatch):
    def run(out, kill_at=None, resume=False):
        task = tiny(task_name)
        torch.manual_seed(1)
        model = QORNN(task.input_size, 8, task.output_size, weight_bits=4, method=method,
                      output_mode=task.output_mode, projunn_mode="T" if method == "ptq-projunn" else "D",
                      **model_kw)
        if kill_at is not None:
            calls = {"n": 0}
            orig = task.batch

            def batch(*a):
                calls["n"] += 1
                if calls["n"] == kill_at:
                    raise Kill
                return orig(*a)
            task.batch = batch
        train(model, task, 24, out, batch_size=4, seed=5, progress=False, resume=resume, checkpoint_every=4,
              eval_every=5, **options)
        return model

    run(tmp_path / "ref")
    # the read-out warm start draws its own batches before training (not on resume)
    fit = 16 if options.get("readout_init") == "lstsq" else 0
    for k in (7, 16):  # killed twice, between checkpoints
        with pytest.raises(Kill):
            run(tmp_path / "k", kill_at=k - 4 if k > 7 else k + fit, resume=k > 7)
        assert (tmp_path / "k.partial").is_dir()
    run(tmp_path / "k", resume=True)
    assert same_weights(tmp_path / "ref", tmp_path / "k")
    assert records(tmp_path / "ref") == records(tmp_path / "k")
    cfg = json.loads((tmp_path / "k" / "config.json").read_text())["train"]
    assert all(cfg[k] == v for k, v in options.items())


def test_two_trainers_on_one_run_are_refused(tmp_path):
    (tmp_path / "r.partial").mkdir()
    holder = Partial(tmp_path / "r", create=False)  # this process trains r
    try:
        with pytest.raises(QornnError, match="being trained by another process"):
            train(QORNN(10, 4, 9), make_task("copy", length=25), 2, tmp_path / "r", progress=False)
    finally:
        holder.release()


def test_stale_temps_of_dead_processes_are_removed(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = [tmp_path / f".r.tmp-{dead.pid}-x1", tmp_path / f".r.old-{dead.pid}-x2"]
    live = tmp_path / f".r.tmp-{os.getppid()}-x3"
    for d in [*stale, live]:
        d.mkdir()
    assert main(["train", "--length", "25", "--hidden", "4", "--steps", "2", "--out", str(tmp_path / "r")]) == 0
    assert not any(d.exists() for d in stale) and live.exists()


@pytest.mark.parametrize("damage, msg", [
    (lambda c: (c / "state.json").write_text('{"format": "qornn-checkpoint", "version": 1, "step": 99}'),
     "field 'step'"),
    (lambda c: (c / "state.json").write_text("[" * 200_000), "nested deeper"),
    (lambda c: (c / "state.json").write_text('{"format": "qornn-checkpoint", "version": 1, "step": ' + "9" * 5000 + "}"),
     "not valid JSON"),
    (lambda c: (c / "state.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage"), "corrupt checkpoint"),
    (lambda c: (c / "state.safetensors").unlink(), "not found"),
    (lambda c: _edit_tensor(c, "model.W", torch.zeros(3, 3)), "expected torch.float32 (4, 4)"),
    (lambda c: _edit_tensor(c, "model.W", torch.full((4, 4), float("nan"))), "NaN"),
    (lambda c: _edit_tensor(c, "rng.torch", torch.zeros(7, dtype=torch.uint8)), "rng.torch"),
    (lambda c: _edit_tensor(c, "optim.0.exp_avg", torch.zeros(4, 4, dtype=torch.float64)), "optim.0.exp_avg"),
    (lambda c: _edit_tensor(c, "evil", torch.zeros(1)), "unexpected tensor"),
    (lambda c: _edit_json(c, ["numpy_rng", "state", "state"], -1), "numpy_rng.state.state"),
    (lambda c: _edit_json(c, ["numpy_rng", "bit_generator"], "MT19937"), "numpy_rng.bit_generator"),
    (lambda c: _edit_json(c, ["metrics_bytes"], "12"), "metrics_bytes"),
    (lambda c: _edit_json(c, ["optimizer"], "rmsprop"), "optimizer"),
])
def test_damaged_checkpoint_is_one_line_error(tmp_path, damage, msg, capsys):
    run = tmp_path / "r"
    task = make_task("copy", length=25)
    model = QORNN(task.input_size, 4, task.output_size)
    with pytest.raises(Kill):
        orig = task.batch
        n = {"i": 0}

        def batch(*a):
            n["i"] += 1
            if n["i"] == 7:
                raise Kill
            return orig(*a)
        task.batch = batch
        train(model, task, 10, run, progress=False, checkpoint_every=3)
    (ckpt,) = (tmp_path / "r.partial" / "checkpoints").glob("step-*")
    damage(ckpt)
    capsys.readouterr()
    assert main(["train", "--resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and msg in err, err
    assert ckpt.exists()  # the user's state is never deleted because it failed to load


def _edit_tensor(ckpt: Path, name: str, value: torch.Tensor) -> None:
    from safetensors.torch import save_file

    t = load_file(str(ckpt / "state.safetensors"))
    t[name] = value
    save_file(t, str(ckpt / "state.safetensors"))


def _edit_json(ckpt: Path, path: list, value) -> None:
    meta = json.loads((ckpt / "state.json").read_text())
    d = meta
    for k in path[:-1]:
        d = d[k]
    d[path[-1]] = value
    (ckpt / "state.json").write_text(json.dumps(meta))
