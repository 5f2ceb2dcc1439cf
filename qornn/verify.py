"""`qornn verify`: run every executor of an artifact on the same inputs and compare integers.

The NumPy simulator is the golden model (docs/spec.md). Each other executor gets the same input
codes -- random sequences from ``np.random.default_rng(seed)`` plus cases aimed at saturation
(qornn.testing.boundary_inputs, constant +x_max / -x_max / 0 runs, an alternating full-scale
run, length-1 sequences) -- and its output codes, and hidden codes where it returns them, must
equal the simulator's with ``np.array_equal``. There is no tolerance anywhere.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Callable

import numpy as np

from qornn.errors import QornnError

Executor = Callable[..., tuple]  # (art, where, x_codes int64 (B, T, m)) -> (y_codes, h_codes or None)


_session_cache: dict = {}


def _onnx_executor(art, art_dir, x):
    """onnxruntime on ART_DIR/model.onnx, at the pinned (exact) optimization level.
    The session is reused across chunks while the file's bytes are unchanged."""
    from qornn.export.onnx_writer import ONNX_FILE, make_session, run_onnx

    try:
        data = (Path(art_dir) / ONNX_FILE).read_bytes()
    except OSError as e:
        raise QornnError(f"cannot read {Path(art_dir) / ONNX_FILE}: {e.strerror or e}") from None
    key = hashlib.sha256(data).hexdigest()
    if key not in _session_cache:
        _session_cache.clear()
        _session_cache[key] = make_session(data)
    return run_onnx(_session_cache[key], x)


def _hls_executor(art, prj_dir, x):
    """C-simulation of the hls4ml project in PRJ_DIR (qornn.hls); checks it was generated from `art`.
    The firmware keeps its hidden state inside, so it returns outputs only."""
    from qornn.hls.csim import run_csim

    return run_csim(prj_dir, x, art), None


def _rtl_executor(art, rtl_dir, x):
    """Verilator simulation of the Verilog core in RTL_DIR (qornn.rtl): all sequences of the chunk
    back to back through one model instance, with random valid/ready stalls; checks it was
    generated from `art`. Returns output and hidden codes (the core's dbg_h port)."""
    from qornn.rtl.sim import run_rtl

    return run_rtl(rtl_dir, x, art, seed=int(x.shape[0] * 7919 + x.shape[1]))


# name -> callable(art, where, x_codes) -> (y_codes, h_codes or None).
# `where` is the directory the executor reads: the artifact directory for "onnx", the --hls
# project directory for "hls-csim".
# HLS HOOK: the hls stage adds "hls-csim" here (C-simulation of the project in `where`); it must
# return int64 codes of the simulator's shapes, and may return None for the hidden codes.
EXECUTORS: dict[str, Executor] = {
    "onnx": _onnx_executor,
    "hls-csim": _hls_executor,
    "rtl-verilator": _rtl_executor,
}


def make_cases(art, sequences: int, length: int, seed: int) -> list[np.ndarray]:
    """Input-code batches, each (B, T, m) int64: random + boundary cases at `length`, and length 1."""
    from qornn.testing import boundary_inputs

    rng = np.random.default_rng(seed)
    xm, m = art.x_max, art.input_size
    full = [rng.integers(-xm, xm + 1, size=(sequences, length, m), dtype=np.int64),
            boundary_inputs(art, rng, max(2, sequences // 4), length)]
    alt = np.where(np.arange(length) % 2 == 0, xm, -xm)[None, :, None]
    full.append(np.stack([np.full((length, m), xm), np.full((length, m), -xm), np.zeros((length, m)),
                          np.broadcast_to(alt, (1, length, m))[0]]).astype(np.int64))
    one = [rng.integers(-xm, xm + 1, size=(max(1, min(sequences, 16)), 1, m), dtype=np.int64),
           np.array([[[xm] * m], [[-xm] * m], [[0] * m]], dtype=np.int64)]
    if length == 1:
        return [np.concatenate(full + one)]
    return [np.concatenate(full), np.concatenate(one)]


def _chunks(x: np.ndarray, width: int):
    """Split the batch so that one chunk's (B, T, width) arrays stay near 2^23 values."""
    step = max(1, (1 << 23) // (x.shape[1] * max(1, width)))
    for i in range(0, x.shape[0], step):
        yield x[i:i + step]


def _first_diff(name, want, got):
    idx = tuple(int(i) for i in np.argwhere(want != got)[0])
    return {"tensor": name, "index": list(idx), "expected": int(want[idx]), "got": int(got[idx])}


def verify(art_dir, onnx: bool = True, hls_dir: str | None = None, sequences: int = 64, length: int = 500,
           seed: int = 0, rtl_dir: str | None = None) -> dict:
    """Compare every requested executor with the simulator; returns a report (see `format_table`).

    Rows: executor, sequences, steps (sequences x time steps), values (integers compared),
    mismatches (integers that differ), seconds. ``report["ok"]`` is False on any mismatch.
    A missing or incompatible artifact or ONNX file raises a one-line QornnError."""
    from qornn.export.artifact import load_artifact
    from qornn.export.simulator import simulate

    if sequences < 0 or length < 1:
        raise QornnError(f"need --sequences >= 0 and --length >= 1, got {sequences} and {length}")
    art = load_artifact(art_dir)
    selected: list[tuple[str, str]] = []
    if onnx:
        from qornn.export.onnx_writer import ONNX_FILE, check_onnx_matches

        path = Path(art_dir) / ONNX_FILE
        if not path.is_file():
            raise QornnError(f"{path} not found; re-run `qornn export` to write it")
        check_onnx_matches(art, path)
        selected.append(("onnx", str(art_dir)))
    if hls_dir is not None:
        if "hls-csim" not in EXECUTORS:
            raise QornnError("the hls-csim executor is not available in this installation of qornn")
        if not Path(hls_dir).is_dir():
            raise QornnError(f"hls project directory {hls_dir} not found")
        selected.append(("hls-csim", str(hls_dir)))
    if rtl_dir is not None:
        if not Path(rtl_dir).is_dir():
            raise QornnError(f"RTL directory {rtl_dir} not found")
        selected.append(("rtl-verilator", str(rtl_dir)))

    cases = make_cases(art, sequences, length, seed)
    n_seq = sum(x.shape[0] for x in cases)
    n_steps = sum(x.shape[0] * x.shape[1] for x in cases)
    width = max(art.hidden_size, art.output_size)
    rows = [{"executor": name, "sequences": n_seq, "steps": n_steps, "values": 0, "mismatches": 0,
             "seconds": 0.0} for name in ["simulator"] + [s for s, _ in selected]]
    for x in cases:
        for xc in _chunks(x, width):  # streamed: memory stays bounded for any --sequences/--length
            t0 = time.perf_counter()
            ref = simulate(art, xc)
            rows[0]["seconds"] += time.perf_counter() - t0
            rows[0]["values"] += ref.output.size + ref.hidden.size
            for row, (name, where) in zip(rows[1:], selected):
                t0 = time.perf_counter()
                y, h = EXECUTORS[name](art, where, xc)
                row["seconds"] += time.perf_counter() - t0
                pairs = [("y_codes", ref.output, y)] + ([("h_codes", ref.hidden, h)] if h is not None else [])
                for tname, want, got in pairs:
                    row["values"] += want.size
                    got = np.asarray(got)
                    if got.shape != want.shape or not np.issubdtype(got.dtype, np.integer):
                        row["mismatches"] += want.size
                        row.setdefault("first_mismatch", {"tensor": tname, "error": f"shape {got.shape} dtype "
                                                          f"{got.dtype}, expected {want.shape} int64"})
                    elif not np.array_equal(want, got):
                        row["mismatches"] += int(np.count_nonzero(want != got))
                        row.setdefault("first_mismatch", _first_diff(tname, want, got))
    for row in rows:
        row["seconds"] = round(row["seconds"], 3)
    return {"artifact": str(art_dir), "content_sha256": art.content_hash(), "seed": seed, "length": length,
            "arithmetic": "float64" if art.float64_exact() else "int64",
            "rows": rows, "ok": all(r["mismatches"] == 0 for r in rows)}


def format_table(report: dict) -> str:
    """The report as a Markdown table plus a one-line verdict."""
    lines = ["| executor | sequences | steps | values compared | mismatching values | seconds |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in report["rows"]:
        what = "golden" if r["executor"] == "simulator" else r["mismatches"]
        lines.append(f"| {r['executor']} | {r['sequences']} | {r['steps']} | {r['values']} | {what} | "
                     f"{r['seconds']:.2f} |")
    for r in report["rows"]:
        if "first_mismatch" in r:
            lines.append(f"first mismatch of {r['executor']}: {r['first_mismatch']}")
    others = [r["executor"] for r in report["rows"] if r["executor"] != "simulator"]
    if not others:
        verdict = "no executor selected (pass --onnx, --hls and/or --rtl); the simulator ran alone"
    elif report["ok"]:
        verdict = (f"bit-exact: {', '.join(others)} {'equals' if len(others) == 1 else 'equal'} the simulator "
                   "on every integer")
    else:
        verdict = "MISMATCH: " + ", ".join(f"{r['executor']} differs in {r['mismatches']} values"
                                           for r in report["rows"] if r["mismatches"])
    return "\n".join(lines + [verdict])
