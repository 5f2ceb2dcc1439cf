"""Hostile inputs for `qornn simulate` and `qornn verify`, each run as a user would: the CLI in a
subprocess. Every case must end with a non-zero exit, exactly one line on stderr, no traceback,
and the file system exactly as it was (no output, no temp, no replaced or truncated file).

Cases are generated per class (hardening issue, classes 1, 2, 5 and 6 for these commands): corrupt
and lying .npy files, every unsupported dtype, bad values, non-regular files, outputs that are
inputs, links, FIFOs, devices or existing files, broken artifacts, sizes that cannot fit.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from qornn.export.artifact import save_artifact
from qornn.export.onnx_writer import onnx_bytes
from qornn.testing import random_artifact

M = 10     # input features of the test artifact


def _npy_bytes(arr) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=True)
    return buf.getvalue()


def _raw_npy(header: str, data: bytes = b"", version=(1, 0)) -> bytes:
    h = header + " " * (-(len(header) + 11) % 64) + "\n"
    size = len(h).to_bytes(2 if version[0] == 1 else 4, "little")
    return b"\x93NUMPY" + bytes(version) + size + h.encode("latin1") + data


GOOD = np.random.default_rng(0).integers(-100, 101, size=(2, 6, M))


def _input_cases():
    """(id, bytes of the --input file)."""
    good = _npy_bytes(GOOD)
    hdr_end = good.index(b"\n") + 1
    rng = np.random.default_rng(1)
    cases = [(f"garbage{k}", rng.integers(0, 256, size=k, dtype=np.uint8).tobytes()) for k in (0, 1, 7, 100, 3000)]
    cases += [(f"truncated{k}", good[:k]) for k in (6, 8, 9, 10, 40, hdr_end - 1, hdr_end, hdr_end + 1, len(good) - 1)]
    cases.append(("trailing-bytes", good + b"\0" * 8))
    d = "{'descr': '<i8', 'fortran_order': False, 'shape': %s, }"
    for shape in ("(1000, 1000000000, 10)", "(3, 6, 10)", "(-1, 6, 10)", "(10**30, 1, 10)",
                  "(1000000000000000000000000000000, 1, 10)", "(12, 10)", "(2, 6, 10, 1)", "(0, 6, 10)", "(2, 0, 10)",
                  "(2, 6, 7)", "()", "(2.5, 6, 10)", "'abc'"):
        cases.append((f"shape{shape}", _raw_npy(d % shape, GOOD.astype("<i8").tobytes())))
    cases += [
        ("header-not-dict", _raw_npy("[1, 2, 3]")),
        ("header-missing-keys", _raw_npy("{'descr': '<i8'}")),
        ("header-bad-descr", _raw_npy("{'descr': '<q9', 'fortran_order': False, 'shape': (1, 1, 10), }", b"\0" * 80)),
        ("header-fortran-yes", _raw_npy("{'descr': '<i8', 'fortran_order': 'yes', 'shape': (1, 1, 10), }", b"\0" * 80)),
        ("header-huge", _raw_npy("{'descr': '<i8', 'fortran_order': False, 'shape': (1, 1, 10), }" + " " * 60000,
                                 b"\0" * 80)),
        ("header-code", _raw_npy("{'descr': __import__('os').system('touch pwned'), 'fortran_order': False, "
                                 "'shape': (1, 1, 10), }", b"\0" * 80)),
        ("version-3", _raw_npy("{'descr': '<i8', 'fortran_order': False, 'shape': (1, 1, 10), }", b"\0" * 80, (3, 0))),
        ("version-9", _raw_npy("{'descr': '<i8', 'fortran_order': False, 'shape': (1, 1, 10), }", b"\0" * 80, (9, 9))),
    ]
    obj = np.empty((1, 1, M), dtype=object)
    obj[:] = 1
    cases += [
        ("object-pickle", _npy_bytes(obj)),
        ("structured", _npy_bytes(np.zeros((1, 2, M), dtype=[("a", "<i4"), ("b", "<f8")]))),
        ("complex", _npy_bytes(np.zeros((1, 2, M), dtype=np.complex128))),
        ("bool", _npy_bytes(np.zeros((1, 2, M), dtype=bool))),
        ("unicode", _npy_bytes(np.full((1, 2, M), "1"))),
        ("datetime", _npy_bytes(np.zeros((1, 2, M), dtype="datetime64[s]"))),
        ("subarray", _raw_npy("{'descr': ('<i8', (2,)), 'fortran_order': False, 'shape': (1, 1, 10), }", b"\0" * 160)),
        ("nan", _npy_bytes(np.where(np.arange(2 * 6 * M).reshape(2, 6, M) == 77, np.nan, 0.1))),
        ("inf", _npy_bytes(np.full((1, 3, M), -np.inf))),
        ("codes-too-big", _npy_bytes(np.full((1, 3, M), 128))),
        ("code-minus-128", _npy_bytes(np.full((1, 3, M), -128, dtype=np.int8))),
        ("uint64-huge", _npy_bytes(np.full((1, 3, M), 2**63 + 5, dtype=np.uint64))),
    ]
    if np.dtype(np.longdouble).itemsize > 8:
        cases.append(("float128", _npy_bytes(np.zeros((1, 2, M), dtype=np.longdouble))))
    return cases


def _setup_input(data):
    def setup(d: Path):
        (d / "bad.npy").write_bytes(data)
        return ["simulate", "art", "--input", "bad.npy", "--out", "y.npy", "--hidden-out", "h.npy"]
    return setup


def _fifo(d, name):
    os.mkfifo(d / name)


SIM = ["simulate", "art", "--input", "x.npy"]
OUTPUT_CASES = {  # id -> setup(d) -> argv
    "input-missing": lambda d: ["simulate", "art", "--input", "nope.npy", "--out", "y.npy"],
    "input-dir": lambda d: (d / "dir").mkdir() or ["simulate", "art", "--input", "dir", "--out", "y.npy"],
    "input-fifo": lambda d: _fifo(d, "f") or ["simulate", "art", "--input", "f", "--out", "y.npy"],
    "input-dev-zero": lambda d: ["simulate", "art", "--input", "/dev/zero", "--out", "y.npy"],
    "input-dangling-link": lambda d: os.symlink("gone.npy", d / "l.npy") or ["simulate", "art", "--input", "l.npy",
                                                                            "--out", "y.npy"],
    "input-is-tensors": lambda d: ["simulate", "art", "--input", "art/tensors.safetensors", "--out", "y.npy"],
    "out-is-input": lambda d: SIM + ["--out", "x.npy"],
    "out-is-input-forced": lambda d: SIM + ["--out", "x.npy", "--force"],
    "out-is-input-other-spelling": lambda d: SIM + ["--out", "./sub/../x.npy", "--force"] if (d / "sub").mkdir() is None
    else [],
    "out-links-to-input": lambda d: os.symlink("x.npy", d / "l.npy") or SIM + ["--out", "l.npy", "--force"],
    "out-hardlink-of-input": lambda d: os.link(d / "x.npy", d / "hl.npy") or SIM + ["--out", "hl.npy", "--force"],
    "out-in-artifact": lambda d: SIM + ["--out", "art/qornn.json", "--force"],
    "out-new-file-in-artifact": lambda d: SIM + ["--out", "art/y.npy"],
    "out-is-artifact": lambda d: SIM + ["--out", "art", "--force"],
    "out-is-dir": lambda d: (d / "dir").mkdir() or SIM + ["--out", "dir", "--force"],
    "out-fifo": lambda d: _fifo(d, "f") or SIM + ["--out", "f", "--force"],
    "out-dev-null": lambda d: SIM + ["--out", "/dev/null", "--force"],
    "out-exists": lambda d: (d / "y.npy").write_bytes(b"precious") and SIM + ["--out", "y.npy"],
    "out-dangling-link": lambda d: os.symlink("gone.npy", d / "l.npy") or SIM + ["--out", "l.npy", "--force"],
    "out-link-to-other": lambda d: (d / "o.npy").write_bytes(b"o") and (os.symlink("o.npy", d / "l.npy") or
                                                                       SIM + ["--out", "l.npy", "--force"]),
    "out-missing-dir": lambda d: SIM + ["--out", "nodir/y.npy"],
    "out-under-a-file": lambda d: SIM + ["--out", "x.npy/y.npy"],
    "hidden-same-as-out": lambda d: SIM + ["--out", "y.npy", "--hidden-out", "y.npy"],
    "hidden-same-as-out-spelled": lambda d: SIM + ["--out", "y.npy", "--hidden-out", "./y.npy"],
    "hidden-link-to-out": lambda d: (d / "y.npy").write_bytes(b"y") and (os.symlink("y.npy", d / "l.npy") or
                                                                        SIM + ["--out", "y.npy", "--hidden-out",
                                                                               "l.npy", "--force"]),
    "hidden-is-input": lambda d: SIM + ["--out", "y.npy", "--hidden-out", "x.npy", "--force"],
    "hidden-exists": lambda d: (d / "h.npy").write_bytes(b"precious") and SIM + ["--out", "y.npy", "--hidden-out",
                                                                                 "h.npy"],
    "hidden-in-artifact": lambda d: SIM + ["--out", "y.npy", "--hidden-out", "art/tensors.safetensors", "--force"],
    "hidden-fifo": lambda d: _fifo(d, "f") or SIM + ["--out", "y.npy", "--hidden-out", "f", "--force"],
    "hidden-missing-dir": lambda d: SIM + ["--out", "y.npy", "--hidden-out", "nodir/h.npy"],
    "artifact-missing": lambda d: ["simulate", "nope", "--input", "x.npy", "--out", "y.npy"],
    "artifact-is-file": lambda d: ["simulate", "x.npy", "--input", "x.npy", "--out", "y.npy"],
    "artifact-corrupt-json": lambda d: (d / "art" / "qornn.json").write_text("{") and SIM + ["--out", "y.npy"],
    "artifact-edited": lambda d: (d / "art" / "qornn.json").write_text(
        (d / "art" / "qornn.json").read_text().replace('"activation": "modrelu"', '"activation": "relu"'))
        and SIM + ["--out", "y.npy"],
    "artifact-empty-dir": lambda d: (d / "e").mkdir() or ["simulate", "e", "--input", "x.npy", "--out", "y.npy"],
    "usage-no-out": lambda d: SIM,
    "usage-empty-value": lambda d: SIM + ["--out="],
}
VERIFY_CASES = {
    "verify-artifact-missing": lambda d: ["verify", "nope", "--onnx"],
    "verify-onnx-garbage": lambda d: (d / "art" / "model.onnx").write_bytes(b"junk") and ["verify", "art", "--onnx"],
    "verify-onnx-missing": lambda d: (d / "art" / "model.onnx").unlink() or ["verify", "art", "--onnx"],
    "verify-length-huge": lambda d: ["verify", "art", "--onnx", "--length", str(10**12)],
    "verify-budget-length-huge": lambda d: ["verify", "art", "--budget", "10", "--length", str(10**13)],
    "verify-length-zero": lambda d: ["verify", "art", "--length", "0"],
    "verify-budget-zero": lambda d: ["verify", "art", "--budget", "0"],
    "verify-negative": lambda d: ["verify", "art", "--sequences", "-5"],
    "verify-budget-text": lambda d: ["verify", "art", "--budget", "1e6"],
    "verify-hls-missing": lambda d: ["verify", "art", "--hls", "nodir"],
    "verify-hls-junk": lambda d: (d / "prj").mkdir() or (d / "prj" / "qornn_hls.json").write_text("{]")
        and ["verify", "art", "--hls", "prj", "--budget", "10"],
    "verify-hls-is-file": lambda d: ["verify", "art", "--hls", "x.npy"],
}


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    d = tmp_path_factory.mktemp("hostile-template")
    art = random_artifact(np.random.default_rng(2), hidden=8, inputs=M, outputs=3, input_bits=8)
    save_artifact(art, d / "art", extra_files={"model.onnx": onnx_bytes(art)})
    np.save(d / "x.npy", GOOD)
    return d


def snapshot(root: Path) -> dict:
    """Every entry under root (not following links): kind, size, mtime, and content hash."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = os.lstat(p)
            digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() and not p.is_symlink() else None
            link = os.readlink(p) if p.is_symlink() else None
            out[str(p.relative_to(root))] = (st.st_mode, st.st_size, st.st_mtime_ns, digest, link)
    return out


def _run_case(template: Path, base: Path, cid: str, setup) -> str | None:
    """Returns None when the case behaves, else a description of what went wrong."""
    d = base / cid.replace("/", "_")
    shutil.copytree(template, d, symlinks=True)
    argv = setup(d)
    before = snapshot(d)
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    env.pop("QORNN_DEBUG", None)
    p = subprocess.run([sys.executable, "-m", "qornn.cli", *argv], cwd=d, capture_output=True, text=True,
                       timeout=120, env=env)
    problems = []
    if p.returncode == 0:
        problems.append("exit 0")
    lines = p.stderr.splitlines()
    if len(lines) != 1:
        problems.append(f"{len(lines)} stderr lines")
    if "Traceback" in p.stderr:
        problems.append("traceback")
    after = snapshot(d)
    if after != before:
        changed = sorted(set(after) ^ set(before)) + sorted(k for k in set(after) & set(before) if after[k] != before[k])
        problems.append(f"file system changed: {changed}")
    if (d / "pwned").exists():
        problems.append("the header's code ran")
    return f"{cid}: {', '.join(problems)}; stderr {p.stderr.strip()[:300]!r}" if problems else None


def _run_all(template, base, cases: dict):
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda kv: _run_case(template, base, *kv), cases.items()))
    return [r for r in results if r]


def test_simulate_hostile_input_files(template, tmp_path):
    cases = {f"input-{cid}": _setup_input(data) for cid, data in _input_cases()}
    assert len(cases) >= 45
    assert _run_all(template, tmp_path, cases) == []


def test_simulate_hostile_paths_and_artifacts(template, tmp_path):
    assert _run_all(template, tmp_path, OUTPUT_CASES) == []


def test_verify_hostile(template, tmp_path):
    assert _run_all(template, tmp_path, VERIFY_CASES) == []


def test_the_harness_sees_a_change(template, tmp_path):
    """The checks above can fail: a good run writes files, exits 0 and is reported."""
    bad = _run_case(template, tmp_path, "good", lambda d: SIM + ["--out", "y.npy"])
    assert bad is not None and "exit 0" in bad and "file system changed" in bad and "y.npy" in bad
