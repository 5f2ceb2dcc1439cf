"""Hostile input, generated per class, through the `qornn` CLI: every refusal is one line on stderr
with a non-zero exit, never a traceback, and leaves the file system as it found it.

Classes: (1) malformed option values for every typed option of every command; (2) semantically
wrong numbers (NaN, inf, negative, absurd sizes) where the value reaches the command; (3) corrupt
or hostile input files (run directories, artifacts, .npy) fed to every command that reads them;
(4) a sample of each run in a real subprocess, to see what a user sees.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from qornn.cli import build_parser, main


def _tree(root: Path) -> dict:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + dirnames:
            p = Path(dirpath) / name
            try:
                st = p.lstat()
            except OSError:
                continue
            out[str(p.relative_to(root))] = (st.st_size, st.st_mtime_ns) if p.is_file() else "dir"
    return out


def run_cli(argv, cwd: Path, capsys) -> tuple[int, str]:
    """main(argv) in `cwd`; returns (exit code, stderr). SystemExit (argparse) counts as an exit."""
    old = os.getcwd()
    os.chdir(cwd)
    try:
        try:
            code = main([str(a) for a in argv])
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 2
    finally:
        os.chdir(old)
    return code, capsys.readouterr().err


def assert_refused(argv, cwd: Path, capsys, match: str | None = None):
    before = _tree(cwd)
    code, err = run_cli(argv, cwd, capsys)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code != 0, (argv, err)
    assert len(lines) == 1 and "Traceback" not in err, (argv, err)
    assert "internal error" not in err, (argv, err)
    if match:
        assert match in err, (argv, err)
    assert _tree(cwd) == before, (argv, "file system changed")
    return lines[0]


# -- class 1: malformed option values, generated from the parser itself ----------------------
def _typed_options():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for cmd, p in sub.choices.items():
        for a in p._actions:
            if a.option_strings and a.type is not None and a.nargs in (None, "?", "+", "*"):
                yield cmd, p, a


REQUIRED_STUB = {"train": ["--out", "o"], "export": ["r", "--out", "o"], "simulate": ["a", "--input", "i", "--out", "o"],
                 "verify": ["a"], "demo": [], "data": ["fetch", "mnist"], "report": ["r"], "bench": ["--out", "o"],
                 "sensitivity": ["r", "--out", "o"], "hls": ["a", "--out", "o"], "rtl": ["a", "--out", "o"]}
BAD_INTS = ["-1", "abc", "1.5", "", "1e3", "0x10", "nan", "--", str(-(2**70))]
BAD_FLOATS = ["abc", "", "1,5", "0x", "--"]


def _class1_cases():
    for cmd, p, a in _typed_options():
        numeric_int = getattr(a.type, "__name__", "") in ("_positive", "int")
        values = BAD_INTS if numeric_int else BAD_FLOATS if a.type is float else []
        for v in values:
            yield pytest.param(cmd, a.option_strings[0], v, id=f"{cmd}{a.option_strings[0]}={v!r}")


@pytest.mark.parametrize("cmd, opt, value", list(_class1_cases()))
def test_malformed_option_values(tmp_path, capsys, cmd, opt, value):
    stub = REQUIRED_STUB.get(cmd, [])
    line = assert_refused([cmd, *stub, f"{opt}={value}"], tmp_path, capsys)
    assert "error" in line


# -- class 2: wrong numbers that reach the command -------------------------------------------
@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("hostile")
    assert main(["train", "--task", "copy", "--length", "25", "--hidden", "6", "--steps", "0", "--out",
                 str(d / "run")]) == 0
    assert main(["export", str(d / "run"), "--act-bits", "6", "--out", str(d / "art")]) == 0
    np.save(d / "x.npy", np.zeros((2, 5, 10), dtype=np.int64))
    return d


SEMANTIC = [
    (["export", "{run}", "--act-bits", "1", "--out", "o"], "activation bits"),
    (["export", "{run}", "--act-bits", "17", "--out", "o"], "activation bits"),
    (["export", "{run}", "--input-bits", "99", "--out", "o"], "input bits"),
    (["export", "{run}", "--output-bits", "0", "--out", "o"], "output bits"),
    (["export", "{run}", "--output-bits", "9", "--out", "o"], "output bits"),
    (["export", "{run}", "--target-sqnr", "nan", "--out", "o"], "target-sqnr"),
    (["export", "{run}", "--target-sqnr", "inf", "--out", "o"], "target-sqnr"),
    (["export", "{run}", "--out", "{run}", "--force"], "overlaps"),
    (["export", "{run}", "--out", "{art}"], "--force"),
    (["export", "{art}", "--out", "o"], "not a qornn run"),
    (["sensitivity", "{run}", "--act-bits", "1", "--out", "o"], "activation bits"),
    (["sensitivity", "{run}", "--out", "{run}"], "overlaps"),
    (["hls", "{art}", "--out", "o", "--reuse-factor", "0"], "reuse factor"),
    (["hls", "{art}", "--out", "o", "--clock-period", "nan"], "clock period"),
    (["hls", "{art}", "--out", "o", "--clock-period", "-5"], "clock period"),
    (["hls", "{art}", "--out", "o", "--backend", "Quartus"], "backend"),
    (["hls", "{art}", "--out", "o", "--part", "x; rm -rf /"], "part"),
    (["hls", "{run}", "--out", "o"], "artifact"),
    (["simulate", "{art}", "--input", "{art}/qornn.json", "--out", "y.npy"], None),
    (["simulate", "{run}", "--input", "{x}", "--out", "y.npy"], "artifact"),
    (["verify", "{run}"], "artifact"),
    (["demo", "--out", "."], None),
]


@pytest.mark.parametrize("argv, match", SEMANTIC, ids=[" ".join(a[:2] + a[2:4]) for a, _ in SEMANTIC])
def test_semantic_refusals(files, tmp_path, capsys, argv, match):
    subst = {"{run}": str(files / "run"), "{art}": str(files / "art"), "{x}": str(files / "x.npy")}
    for k, v in subst.items():
        argv = [a.replace(k, v) for a in argv]
    snap = _tree(files)
    assert_refused(argv, tmp_path, capsys, match)
    assert _tree(files) == snap


# -- class 3: corrupt files, generated ------------------------------------------------------
def _corruptions():
    """(name, function(dir) that damages a copy of a run or an artifact)."""
    def write(rel, data):
        def f(d):
            p = d / rel
            p.write_bytes(data if isinstance(data, bytes) else data.encode())
        return f

    def truncate(rel, frac):
        def f(d):
            p = d / rel
            p.write_bytes(p.read_bytes()[: int(p.stat().st_size * frac)])
        return f

    def edit_json(rel, fn):
        def f(d):
            p = d / rel
            obj = json.loads(p.read_text())
            fn(obj)
            p.write_text(json.dumps(obj))
        return f

    def remove(rel):
        return lambda d: (d / rel).unlink()

    def setpath(obj, path, value):
        for k in path[:-1]:
            obj = obj[k]
        obj[path[-1]] = value

    run = [("config not json", write("config.json", "{nope")),
           ("config deep", write("config.json", "[" * 200000)),
           ("config huge int", write("config.json", '{"format": "qornn-run", "version": ' + "9" * 5000 + "}")),
           ("config binary", write("config.json", b"\xff\xfe\x00garbage")),
           ("config list", write("config.json", "[1, 2]")),
           ("weights truncated", truncate("model.safetensors", 0.5)),
           ("weights empty", write("model.safetensors", b"")),
           ("weights garbage", write("model.safetensors", os.urandom(300))),
           ("weights missing", remove("model.safetensors"))]
    for path, value in [(("model", "hidden_size"), "6"), (("model", "hidden_size"), 6.0), (("model", "hidden_size"), -6),
                        (("model", "hidden_size"), 10**6), (("model", "weight_bits"), 99), (("model", "method"), "x"),
                        (("model", "bjorck_iters"), -5), (("model", "power_iters"), 1.5), (("task", "name"), 7),
                        (("task", "length"), "25"), (("model", "activation"), None), (("model",), []),
                        (("task",), "copy"), (("format",), "qornn-artifact")]:
        run.append((f"config {'.'.join(path)}={value!r}", edit_json("config.json", lambda o, p=path, v=value: setpath(o, p, v))))
    art = [("spec not json", write("qornn.json", "{")),
           ("spec deep", write("qornn.json", "{\"a\":" * 100000)),
           ("spec huge int", write("qornn.json", '{"format": "qornn-integer-artifact", "schema_version": '
                                   + "1" * 5000 + "}")),
           ("tensors truncated", truncate("tensors.safetensors", 0.7)),
           ("tensors garbage", write("tensors.safetensors", os.urandom(64))),
           ("tensors header lies", write("tensors.safetensors", (10**6).to_bytes(8, "little") + b"{}")),
           ("spec missing", remove("qornn.json"))]
    for path, value in [(("requant", "m_w"), 3), (("requant", "shift_u"), 99), (("bits", "h"), "8"),
                        (("scales", "input"), 1e-300), (("model", "output_mode"), "both"), (("widths", "zb"), 99),
                        (("tensors", "b", "dtype"), "int64"), (("content_sha256",), "0" * 64),
                        (("ranges", "x"), [-128, 127]), (("narrow_range", "W"), 1), (("widths", "pre"), 99)]:
        art.append((f"spec {'.'.join(path)}={value!r}", edit_json("qornn.json", lambda o, p=path, v=value: setpath(o, p, v))))
    return run, art


RUN_CORRUPTIONS, ART_CORRUPTIONS = _corruptions()


@pytest.mark.parametrize("name, damage", RUN_CORRUPTIONS, ids=[n for n, _ in RUN_CORRUPTIONS])
@pytest.mark.parametrize("cmd", ["export", "sensitivity"])
def test_corrupt_runs_refused(files, tmp_path, capsys, name, damage, cmd):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(files / "run", run)
    damage(run)
    assert_refused([cmd, run, "--out", tmp_path / "o"], tmp_path, capsys)


@pytest.mark.parametrize("name, damage", ART_CORRUPTIONS, ids=[n for n, _ in ART_CORRUPTIONS])
@pytest.mark.parametrize("cmd", ["simulate", "verify", "hls"])
def test_corrupt_artifacts_refused(files, tmp_path, capsys, name, damage, cmd):
    import shutil

    art = tmp_path / "art"
    shutil.copytree(files / "art", art)
    damage(art)
    argv = {"simulate": ["simulate", art, "--input", files / "x.npy", "--out", tmp_path / "y.npy"],
            "verify": ["verify", art, "--sequences", "2", "--length", "3"],
            "hls": ["hls", art, "--out", tmp_path / "p"]}[cmd]
    assert_refused(argv, tmp_path, capsys, "artifact" if "missing" not in name else None)


# -- class 4: what a user sees, in a subprocess ---------------------------------------------
SUBPROCESS = [
    ["export", "{run}", "--act-bits", "1", "--out", "o"],
    ["export", "/nonexistent/run", "--out", "o"],
    ["simulate", "{art}", "--input", "/nonexistent.npy", "--out", "y.npy"],
    ["hls", "{art}", "--out", "p", "--backend", "nope"],
    ["train", "--hidden", "-3", "--out", "o"],
    ["frobnicate"],
]


@pytest.mark.parametrize("argv", SUBPROCESS, ids=[" ".join(a[:2]) for a in SUBPROCESS])
def test_subprocess_one_line_no_traceback(files, tmp_path, argv):
    argv = [a.replace("{run}", str(files / "run")).replace("{art}", str(files / "art")) for a in argv]
    before = _tree(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "qornn.cli", *argv], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode != 0 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert _tree(tmp_path) == before
