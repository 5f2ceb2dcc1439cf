"""Hostile input to train / report / bench / data: each case is one stderr line naming the problem, a
non-zero exit, no traceback, and the file system exactly as it was.

The cases of a class run in ONE subprocess (a driver calling qornn.cli.main per case, with its
own stderr capture and a file-system snapshot around each call), so hundreds of cases cost a
few interpreter start-ups, not hundreds."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from qornn.cli import main

DRIVER = textwrap.dedent(r"""
    import contextlib, io, json, os, sys
    from qornn.cli import main
    root, cases = sys.argv[1], json.loads(sys.stdin.read())

    def snapshot():
        out = {}
        for d, _, files in os.walk(root):
            out[d] = None  # a directory: its existence (its mtime moves when a temp comes and goes)
            for f in files:
                p = os.path.join(d, f)
                try:
                    st = os.stat(p)
                    out[p] = (st.st_size, st.st_mtime_ns)
                except OSError:
                    pass
        return out

    results = []
    for argv, env in cases:
        os.environ.update(env)
        before, err = snapshot(), io.StringIO()
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                rc = main(argv)
        except SystemExit as e:
            rc = e.code
        except BaseException as e:
            import traceback
            rc, err = "uncaught", io.StringIO(traceback.format_exc())
        for k in env:
            os.environ.pop(k, None)
        results.append([rc, err.getvalue(), snapshot() == before])
    print(json.dumps(results))
""")


def run_cases(root: Path, cases: list) -> list:
    """[(rc, stderr, fs_unchanged)] for [(argv, env)], all in one subprocess."""
    p = subprocess.run([sys.executable, "-c", DRIVER, str(root)], input=json.dumps(cases), capture_output=True,
                       text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


def check(results, cases, msgs):
    for (rc, err, same), (argv, _), msg in zip(results, cases, msgs):
        assert rc not in (0, None, "uncaught"), (argv, rc, err)
        assert err.count("\n") == 1 and "Traceback" not in err, (argv, err)
        assert msg.lower() in err.lower(), (argv, msg, err)
        assert same, (argv, "file system changed")


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A finished run (0 steps), its metrics with a few records, and a finished 1-cell grid."""
    d = tmp_path_factory.mktemp("hostile")
    run = d / "run"
    assert main(["train", "--length", "25", "--hidden", "6", "--steps", "3", "--out", str(run)]) == 0
    return d, run


TRAIN = ["train", "--length", "25", "--hidden", "6", "--steps", "2"]


def test_train_options_class(base, tmp_path):
    out = ["--out", str(tmp_path / "o")]
    cases, msgs = [], []

    def add(args, msg, env=None):
        cases.append([[*TRAIN, *args, *out] if args[:1] != ["!"] else [*args[1:], *out], env or {}])
        msgs.append(msg)

    # memory: refused with the estimate, before anything is allocated
    for args in (["--hidden", "1000000"], ["--hidden", "300000"], ["--hidden", str(2**40)],
                 ["--batch-size", str(10**9)], ["--length", str(10**9)], ["--hidden", "40000", "--batch-size", "4096"]):
        add(args, "of memory")
    add(["!", "train", "--task", "adding", "--hidden", str(10**7), "--steps", "1"], "of memory")
    # learning rates and other real-valued settings
    for v in ("-1", "nan", "inf", "-inf", "0", "1e999", "-0.0", "NaN", "-1e-9"):
        add([f"--lr={v}"], "--lr")
    for v in ("nan", "-1", "inf", "0"):
        add([f"--orth-lr={v}"], "--orth-lr")
    for v in ("2", "-0.5", "nan", "inf"):
        add(["--lr-schedule", "step", "--lr-decay-every", "3", f"--lr-decay={v}"], "--lr-decay ")
    for v in ("-1", "nan", "inf", "1e999"):
        add([f"--clip-grad={v}"], "--clip-grad")
    for v in ("nan", "-5", "inf"):
        add([f"--checkpoint-seconds={v}"], "--checkpoint-seconds")
    for v in ("nan", "inf", "-1"):
        add(["--method", "ste-pen", f"--penalty={v}"], "penalty")
    add(["--lr-schedule", "step"], "--lr-decay-every")
    add(["--lr-schedule", "cosine"], "--lr-schedule")
    add(["--optimizer", "sgd"], "--optimizer")
    add(["!", "train", "--epochs", "3"], "finite dataset")
    add(["--device", "tpu"], "device")
    add(["--batch-size", "0"], "--batch-size")
    # seeds torch and numpy cannot take
    for v in (2**64, 2**64 + 1, 2**100, 10**30, 10**400):
        add(["--seed", str(v)], "--seed")
    for v in ("-1", "1.5", "x"):
        add([f"--seed={v}"], "--seed")
    # usage mistakes
    add(["!", "train", "--steps", "3", "--epochs", "2"], "not allowed with")
    cases.append([["train", "--steps", "1"], {}])
    msgs.append("--out is required")
    results = run_cases(tmp_path, cases)
    check(results, cases, msgs)
    assert not list(tmp_path.iterdir())


def _config_cases(run: Path, tmp: Path):
    """Copies of `run` whose config.json has one field of the wrong type or range each."""
    cfg = json.loads((run / "config.json").read_text())
    edits = []
    for k, bad in [("hidden_size", "6"), ("hidden_size", 6.0), ("hidden_size", True), ("hidden_size", -3),
                   ("hidden_size", 10**7), ("hidden_size", None), ("input_size", 2**40),
                   ("bjorck_iters", -5), ("bjorck_iters", "15"), ("bjorck_iters", 1.5), ("bjorck_iters", 10**9),
                   ("power_iters", 0), ("power_iters", False), ("weight_bits", 9), ("weight_bits", "4"),
                   ("weight_bits", 4.0), ("method", 3), ("method", "nope"), ("activation", None),
                   ("penalty", "x"), ("projunn_rank", 2.5), ("output_bits", 0), ("unknown", 1)]:
        msg = {("hidden_size", 10**7): "of memory", ("weight_bits", 9): "weight bits",
               ("output_bits", 0): "output bits"}.get((k, bad), k) if not isinstance(bad, bool) else k
        edits.append((["model", k], bad, msg))
    for k, bad in [("length", "25"), ("length", 25.5), ("length", -1), ("length", 10**30), ("name", "nope"),
                   ("name", 7), ("alphabet", None), ("data", [1, 2])]:
        edits.append((["task", k], bad, k if k not in ("alphabet",) else "alphabet"))
    for k, bad in [("seed", 2**64), ("seed", -1), ("seed", 1.0), ("lr", "x"), ("lr", -1), ("steps", -1),
                   ("steps", "3"), ("batch_size", 0), ("optimizer", "sgd"), ("final", {"float": {"accuracy": "x"}}),
                   ("final", []), ("seconds", "fast"), ("whatever", 1)]:
        edits.append((["train", k], bad, k))
    out = []
    for i, (path, bad, name) in enumerate(edits):
        d = tmp / f"c{i}"
        shutil.copytree(run, d)
        c = json.loads(json.dumps(cfg))
        c[path[0]][path[1]] = bad
        (d / "config.json").write_text(json.dumps(c))
        out.append((d, name))
    for j, text in enumerate(["[" * 200_000, '{"format": "qornn-run", "x": ' + "7" * 5000 + "}", "{nope",
                              '{"format": "qornn-run", "version": 1, "model": NaN}', "\udcff".encode("utf-8", "surrogatepass").decode("latin-1"),
                              "[]", '"qornn-run"']):
        d = tmp / f"j{j}"
        shutil.copytree(run, d)
        (d / "config.json").write_text(text, encoding="latin-1" if j == 4 else "utf-8")
        out.append((d, ""))
    return out


def test_edited_config_class(base, tmp_path):
    _, run = base
    cases, msgs = [], []
    for d, name in _config_cases(run, tmp_path):
        for cmd in (["export", str(d), "--out", str(tmp_path / "art")], ["report", str(d)]):
            cases.append([cmd, {}])
            msgs.append(name)
    check(run_cases(tmp_path, cases), cases, msgs)


def test_metrics_class(base, tmp_path):
    _, run = base
    good = (run / "metrics.jsonl").read_text().splitlines()
    bad_lines = ['{"loss": 1.0}', '{"step": "1", "loss": 1.0}', '{"step": 1.5, "loss": 1.0}', '{"step": 1}',
                 '{"step": 1, "loss": "x"}', '{"step": 1, "loss": NaN}', '[1, 2]', '"step"', "{" * 200_000,
                 '{"step": ' + "1" * 5000 + ', "loss": 1.0}', '{"step": 1, "loss": 1.0, "eval_accuracy": "high"}',
                 '{"step": 1, "loss": 1.0, "eval_accuracy": 0.5}', "not json at all", '{"step": 0, "loss": 1}']
    cases, msgs = [], []
    for i, line in enumerate(bad_lines):
        d = tmp_path / f"m{i}"
        shutil.copytree(run, d)
        (d / "metrics.jsonl").write_text("\n".join([line, *good]) + "\n")
        cases.append([["report", str(d)], {}])
        msgs.append("metrics.jsonl")
    d = tmp_path / "missing"
    shutil.copytree(run, d)
    (d / "metrics.jsonl").unlink()
    cases.append([["report", str(d)], {}])
    msgs.append("not found")
    d = tmp_path / "decreasing"
    shutil.copytree(run, d)
    (d / "metrics.jsonl").write_text("\n".join(reversed(good)) + "\n")
    cases.append([["report", str(d)], {}])
    msgs.append("steps must increase")
    check(run_cases(tmp_path, cases), cases, msgs)


BENCH = ["bench", "--task", "copy", "--length", "25", "--hidden", "4", "--steps", "2", "--methods", "fp",
         "--bits", "4", "--no-ray"]


def test_bench_class(tmp_path):
    grid = tmp_path / "grid"
    assert main([*BENCH, "--out", str(grid)]) == 0
    header = (grid / "results.csv").read_text().splitlines()[0]
    row = (grid / "results.csv").read_text().splitlines()[1]
    cells = row.split(",")
    bad_files = {
        "garbage": b"\x00\x01\x02 not a csv",
        "nonutf8": header.encode() + b"\n\xff\xfe\n",
        "header": b"a,b,c\n1,2,3\n",
        "empty": b"",
        "short": (header + "\ncopy,fp,4\n").encode(),
        "long": (header + "\n" + row + ",extra\n").encode(),
        "float_int": (header + "\n" + ",".join(cells[:2] + ["4.5"] + cells[3:]) + "\n").encode(),
        "huge_int": (header + "\n" + ",".join(cells[:2] + ["9" * 5000] + cells[3:]) + "\n").encode(),
        "huge_field": (header + "\n" + ",".join(cells[:12] + ["x" * 200_000] + cells[13:]) + "\n").encode(),
        "status": (header + "\n" + ",".join(cells[:7] + ["great"] + cells[8:]) + "\n").encode(),
        "nan_ok": (header + "\n" + ",".join(cells[:8] + ["nan"] + cells[9:]) + "\n").encode(),
        "metric_text": (header + "\n" + ",".join(cells[:8] + ["good"] + cells[9:]) + "\n").encode(),
        "plan": (header + "\n" + ",".join(cells[:13] + ["../../etc"]) + "\n").encode(),
        "quote": (header + '\n"copy,fp\n').encode(),
        "nul": (header + "\n" + row.replace("fp", "f\x00p") + "\n").encode(),
    }
    cases, msgs = [], []
    for name, data in bad_files.items():
        d = tmp_path / name
        d.mkdir()
        (d / "results.csv").write_bytes(data)
        cases.append([[*BENCH, "--out", str(d)], {}])
        msgs.append("results.csv")
    # bad options never create (or touch) the output directory
    for args, msg in [(["--methods", "nope"], "unknown method"), (["--bits", "9"], "weight bits"),
                      (["--bits", "0"], "weight bits"), (["--act-bits", "1"], "activation bits"),
                      (["--act-bits", "17"], "activation bits"), (["--lr", "nan"], "--lr"), (["--lr", "-1"], "--lr"),
                      (["--seeds", "0", str(2**64)], "--seed"), (["--hidden", str(10**6)], "memory"),
                      (["--task", "nope"], "unknown task"), (["--epochs", "3"], "not allowed with"),
                      (["--workers", "2"], "--no-ray"), (["--optimizer", "sgd"], "--optimizer"),
                      (["--clip-grad", "nan"], "--clip-grad"), (["--orth-lr", "0"], "--orth-lr"),
                      (["--length", "5"], "length")]:
        cases.append([[*BENCH, *args, "--out", str(tmp_path / "new" / "grid")], {}])
        msgs.append(msg)
    check(run_cases(tmp_path, cases), cases, msgs)
    assert not (tmp_path / "new").exists()


def test_data_class(tmp_path):
    (tmp_path / "afile").write_text("x")
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "mnist.npz").write_bytes(b"PK\x03\x04 truncated zip")
    (cache / "ptb_char.npz").write_bytes(b"")
    o = ["--steps", "1", "--hidden", "4", "--out", str(tmp_path / "o")]
    cases, msgs = [], []
    for task in ("pmnist", "smnist", "ptb-char"):
        for env, msg in (({"QORNN_DATA": str(cache)}, "delete it"), ({"QORNN_DATA": str(tmp_path / "afile")}, "not a directory"),
                         ({"QORNN_DATA": str(tmp_path / "afile" / "sub")}, "not a directory")):
            cases.append([["train", "--task", task, *o], env])
            msgs.append(msg)
    for name in ("mnist", "ptb-char"):
        for env in ({"QORNN_DATA": str(tmp_path / "afile")}, {"QORNN_DATA": str(tmp_path / "afile" / "sub")}):
            cases.append([["data", "fetch", name], env])
            msgs.append("not a directory")
    cases.append([["data", "fetch", "cifar"], {}])
    msgs.append("invalid choice")
    check(run_cases(tmp_path, cases), cases, msgs)


# -- Ctrl-C anywhere in start-up: 'qornn: interrupted', exit 130, nothing left behind --------------
@pytest.mark.parametrize("target", [
    "qornn.train.tasks.make_task", "torch.manual_seed", "qornn.train.model.QORNN.reset_parameters",
    "qornn.train.resume.Partial.write_plan", "qornn.train.resume._write_synced",
    "qornn.train.trainer.make_optimizer", "qornn.train.tasks.copy.CopyTask.batch",
    "qornn.train.trainer.check_budget", "qornn.train.resume.Partial._clean_temps",
])
def test_ctrl_c_during_start_up(tmp_path, monkeypatch, capsys, target):
    import importlib

    mod, _, attr = target.rpartition(".")
    try:
        obj = importlib.import_module(mod)
    except ModuleNotFoundError:
        mod, _, cls = mod.rpartition(".")
        obj = getattr(importlib.import_module(mod), cls)

    def interrupt(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(obj, attr, interrupt)
    rc = main([*TRAIN, "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # (above it, once training started: the progress bar)
    assert rc == 130 and "Traceback" not in err and last in ("qornn: interrupted", "qornn: interrupted (nothing written)"), err
    assert not list(tmp_path.iterdir())


# -- a full disk: 'no space left', nothing torn, and the run resumes once there is room ------------
def test_disk_full_in_process(tmp_path, monkeypatch, capsys):
    from qornn.train import resume

    real, calls = resume._write_synced, {"n": 0}

    def full(path, data):
        calls["n"] += 1
        if calls["n"] >= 9:  # a few checkpoints succeed, then the disk is full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(path, data)
    monkeypatch.setattr(resume, "_write_synced", full)
    rc = main([*TRAIN[:-1], "40", "--checkpoint-every", "5", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # (above it: the progress bar)
    assert rc == 2 and "Traceback" not in err and "no space left on device" in last and "--resume" in last, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.partial"]
    ckpts = list((tmp_path / "r.partial" / "checkpoints").iterdir())
    assert len(ckpts) == 1 and not ckpts[0].name.startswith(".")  # the last complete one, no torn temp
    monkeypatch.setattr(resume, "_write_synced", real)
    assert main(["train", "--resume", str(tmp_path / "r")]) == 0
    assert main([*TRAIN[:-1], "40", "--out", str(tmp_path / "ref")]) == 0
    from safetensors.torch import load_file

    a, b = load_file(str(tmp_path / "r" / "model.safetensors")), load_file(str(tmp_path / "ref" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def _tmpfs_usable() -> bool:
    if not shutil.which("unshare"):
        return False
    p = subprocess.run(["unshare", "-rm", "sh", "-c", "d=$(mktemp -d) && mount -t tmpfs -o size=40k tmpfs $d"],
                       capture_output=True)
    return p.returncode == 0


@pytest.mark.skipif(not _tmpfs_usable(), reason="needs unprivileged mount namespaces (unshare -rm) for a tiny tmpfs")
def test_disk_full_on_a_real_tiny_filesystem(tmp_path):
    """A 40 KiB tmpfs fills up during training: the error says so, nothing torn is left, and the
    last checkpoint resumes once the filesystem has room (remounted larger)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    py, argv = sys.executable, " ".join([*TRAIN[:-1], "300", "--checkpoint-every", "10"])
    script = f"""
        mount -t tmpfs -o size=40k tmpfs {mnt}
        {py} -m qornn.cli {argv} --out {mnt}/r > /dev/null 2> {tmp_path}/err; echo $? > {tmp_path}/rc
        ls -a {mnt} > {tmp_path}/ls1; ls -a {mnt}/r.partial/checkpoints > {tmp_path}/ls2 2>/dev/null
        mount -o remount,size=50m {mnt}
        {py} -m qornn.cli train --resume {mnt}/r > /dev/null 2> {tmp_path}/err2; echo $? > {tmp_path}/rc2
        cp {mnt}/r/model.safetensors {tmp_path}/resumed.safetensors
    """
    subprocess.run(["unshare", "-rm", "sh", "-c", textwrap.dedent(script)], check=True,
                   env={**os.environ, "OMP_NUM_THREADS": "1"})
    err = (tmp_path / "err").read_text()
    last = err.strip().splitlines()[-1]
    assert (tmp_path / "rc").read_text().strip() == "2" and "Traceback" not in err, err
    assert last.startswith("qornn: error: no space left on device"), last
    assert (tmp_path / "ls1").read_text().split() == [".", "..", "r.partial"]
    ckpts = (tmp_path / "ls2").read_text().split()[2:]
    assert len(ckpts) == 1 and ckpts[0].startswith("step-"), ckpts
    assert (tmp_path / "rc2").read_text().strip() == "0", (tmp_path / "err2").read_text()
    ref = tmp_path / "ref"
    assert main([*TRAIN[:-1], "300", "--out", str(ref)]) == 0
    from safetensors.torch import load_file

    a, b = load_file(str(tmp_path / "resumed.safetensors")), load_file(str(ref / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
