"""`qornn bench` on Ray (local): tiny grids run, a failing cell is reported without stopping the grid,
seeds give mean ± std, and the grid resumes after a SIGKILL of a worker or of the driver, ending
with the same weights as an uninterrupted (serial) run."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from qornn.reproduce import run_grid

ray = pytest.importorskip("ray")

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
GRID = ["bench", "--task", "copy", "--length", "22", "--hidden", "8", "--bits", "4", "--methods", "ste-bjorck", "fp"]


@pytest.fixture(scope="module")
def ray_session():
    """One local Ray for the in-process tests of this module (run_grid reuses a running session)."""
    import logging

    logging.getLogger("ray").setLevel(logging.ERROR)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def rows(out: Path) -> list[dict]:
    with open(out / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


def same_weights(a: Path, b: Path) -> bool:
    x, y = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    return sorted(x) == sorted(y) and all(torch.equal(x[k], y[k]) for k in x)


def test_seeds_on_ray_with_a_failing_cell(ray_session, tmp_path):
    out = tmp_path / "grid"
    (out / "runs").mkdir(parents=True)
    (out / "runs" / "fp-w4-s1").write_text("in the way")  # this cell cannot write its run: it fails
    got = run_grid("copy", ["ste-bjorck", "fp"], [4], 8, 20, out, seeds=[0, 1], task_options={"length": 22},
                   progress=False)
    status = {(r["method"], r["seed"]): r["status"] for r in got}
    assert status == {("ste-bjorck", 0): "ok", ("ste-bjorck", 1): "ok", ("fp", 0): "ok", ("fp", 1): "failed"}
    failed = next(r for r in got if r["status"] == "failed")
    assert "not a directory" in failed["error"]
    md = (out / "results.md").read_text()
    assert "±" in md and "(1/2 seeds)" in md and "Failed cells" in md
    assert len(rows(out)) == 4
    before = {r["method"] + r["seed"]: r["seconds"] for r in rows(out) if r["status"] == "ok"}
    (out / "runs" / "fp-w4-s1").unlink()
    again = run_grid("copy", ["ste-bjorck", "fp"], [4], 8, 20, out, seeds=[0, 1], task_options={"length": 22},
                     progress=False)
    assert all(r["status"] == "ok" for r in again) and len(rows(out)) == 4
    after = {r["method"] + r["seed"]: r["seconds"] for r in rows(out)}
    assert all(after[k] == v for k, v in before.items())  # finished cells were not run again


def _bench(out: Path, steps: int, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "qornn.cli", *GRID, "--steps", str(steps), "--out", str(out), *extra],
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _training_pids(out: Path, past_step: int = 0) -> dict[str, int]:
    """Cells being trained now (with a checkpoint past `past_step`) -> pid of their trainer."""
    found = {}
    for pdir in (out / "runs").glob("*.partial"):
        try:
            pid = int((pdir / ".lock").read_text().strip())
            steps = [int(p.name[5:]) for p in (pdir / "checkpoints").glob("step-*")]
        except (OSError, ValueError):
            continue
        if steps and max(steps) > past_step:
            found[pdir.name[:-len(".partial")]] = pid
    return found


def _wait(pred, proc, timeout=240):
    end = time.time() + timeout
    while time.time() < end:
        v = pred()
        if v:
            return v
        if proc.poll() is not None:
            return None
        time.sleep(0.05)
    return None


@pytest.fixture(scope="module")
def serial_reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("serial") / "grid"
    p = _bench(out, 300, "--no-ray")
    _, err = p.communicate()
    assert p.returncode == 0, err[-2000:]
    return out


def test_worker_sigkill_is_retried_and_resumes(serial_reference, tmp_path):
    out = tmp_path / "grid"
    p = _bench(out, 300, "--workers", "2")
    cells = _wait(lambda: _training_pids(out, past_step=20), p)
    assert cells, p.communicate()[1][-2000:]
    cell, pid = next(iter(cells.items()))
    assert pid != p.pid
    os.kill(pid, signal.SIGKILL)  # a Ray worker dies mid-cell: Ray retries the task, which resumes
    _, err = p.communicate(timeout=600)
    assert p.returncode == 0, err[-2000:]
    assert all(r["status"] == "ok" for r in rows(out)) and len(rows(out)) == 2
    for c in ("ste-bjorck-w4", "fp-w4"):
        assert same_weights(serial_reference / "runs" / c, out / "runs" / c), c


def test_driver_sigkill_then_rerun_resumes(serial_reference, tmp_path):
    out = tmp_path / "grid"
    p = _bench(out, 300, "--workers", "1")  # one cell at a time: the first finishes, the second is cut
    assert _wait(lambda: (out / "results.csv").exists() and _training_pids(out, past_step=20), p), \
        p.communicate()[1][-2000:]
    first = rows(out)
    os.killpg(p.pid, signal.SIGKILL)  # the driver (and anything in its session) dies at once
    p.wait()
    assert len(first) == 1
    q = _bench(out, 300, "--workers", "1")
    _, err = q.communicate(timeout=600)
    assert q.returncode == 0, err[-2000:]
    now = rows(out)
    assert len(now) == 2 and all(r["status"] == "ok" for r in now)
    assert next(r for r in now if r["method"] == first[0]["method"]) == first[0]  # merged, not redone
    for c in ("ste-bjorck-w4", "fp-w4"):
        assert same_weights(serial_reference / "runs" / c, out / "runs" / c), c


def test_qat_grid_trains_the_hidden_state_in_and_keeps_calibrated_plans(tmp_path):
    import json

    out = tmp_path / "g"
    got = run_grid("copy", ["ste-bjorck", "ptq-projunn"], [4], 8, 6, out, act_bits=6, task_options={"length": 22},
                   eval_batches=1, use_ray=False, progress=False, qat=True)
    assert [r["status"] for r in got] == ["ok", "ok"]
    runs = {p.name: json.loads((p / "config.json").read_text())["model"] for p in (out / "runs").iterdir()}
    acts = sorted((m["method"], m["act_bits"]) for m in runs.values())
    assert acts == [("ptq-projunn", None), ("ste-bjorck", 6)], acts
    assert "hidden-state QAT" in (out / "results.md").read_text()
    # the QAT-trained cell's integer metric is its fake-quantized one (the same integer loop)
    bj = next(r for r in got if r["method"] == "ste-bjorck")
    assert bj["integer"] == pytest.approx(bj["fake_quantized"], abs=0.02)
    # ptq-projunn is calibrated with or without --qat: the same plan, so a calibrated grid reuses it
    again = run_grid("copy", ["ptq-projunn"], [4], 8, 6, out, act_bits=6, task_options={"length": 22},
                     eval_batches=1, use_ray=False, progress=False)
    assert [r["plan"] for r in again] == [r["plan"] for r in got if r["method"] == "ptq-projunn"]
    # while a calibrated ste-bjorck cell is another plan than its QAT cell
    cal = run_grid("copy", ["ste-bjorck"], [4], 8, 6, tmp_path / "c", act_bits=6, task_options={"length": 22},
                   eval_batches=1, use_ray=False, progress=False)
    assert cal[0]["plan"] != bj["plan"]
