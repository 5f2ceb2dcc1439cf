"""`qornn verify`: run every executor of an artifact on the same inputs and compare integers.

The NumPy simulator is the golden model (docs/spec.md). Each other executor gets the same input
codes -- random, boundary, saturating and extreme sequences from ``np.random.default_rng(seed)``
(qornn.verify_cases) -- and its output codes, and hidden codes where it returns them, must equal
the simulator's with ``np.array_equal``. There is no tolerance anywhere.

Either ``--sequences S --length T`` (S random sequences of length T plus the other kinds), or
``--budget N``: batches over lengths spread from 1 to ``--length`` (default 3000) until every
executor has compared at least N integers. Batches are generated and compared one at a time, so
memory stays bounded; one sequence that cannot fit in memory is refused before it is generated.
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
    """C-simulation of qornn's own cached build of the --hls project (qornn.hls.trust: the user's
    directory, checked equal to it, runs nothing); checks it was generated from `art`.
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


def max_length_of(name: str, where: str) -> int | None:
    """The longest sequence an executor takes (None: any). An io_parallel hls4ml project is
    compiled for its --max-length; io_stream projects and the RTL cores take any length."""
    if name == "hls-csim":
        from qornn.hls.project import read_meta

        opts = read_meta(where)["options"]
        return None if opts.get("io_type") == "io_stream" else int(opts["max_length"])
    return None


def _first_diff(name, want, got):
    idx = tuple(int(i) for i in np.argwhere(want != got)[0])
    return {"tensor": name, "index": list(idx), "expected": int(want[idx]), "got": int(got[idx])}


DEFAULT_BUDGET_LENGTH = 3000


def verify(art_dir, onnx: bool = True, hls_dir: str | None = None, sequences: int = 64, length: int | None = None,
           seed: int = 0, budget: int | None = None, rtl_dir: str | None = None) -> dict:
    """Compare every requested executor with the simulator; returns a report (see `format_table`).

    Rows: executor, sequences, steps (sequences x time steps), values (integers compared),
    mismatches (integers that differ), seconds. ``report["ok"]`` is False on any mismatch.
    Without `budget`: `sequences` random sequences of `length` (default 500) plus the other
    kinds; with `budget` N: the lengths spread from 1 to `length` (default 3000, capped by an
    executor's maximum) until every executor has compared at least N integers.
    A missing or incompatible artifact or ONNX file raises a one-line QornnError."""
    from qornn.export.artifact import load_artifact
    from qornn.export.simulator import simulate
    from qornn.memory import check_memory
    from qornn.verify_cases import budget_batches, fixed_batches, length_spread

    if length is None:
        length = 500 if budget is None else DEFAULT_BUDGET_LENGTH
    if sequences < 0 or length < 1 or (budget is not None and budget < 1):
        raise QornnError(f"need --sequences >= 0, --length >= 1 and --budget >= 1, got {sequences}, {length}"
                         f"{'' if budget is None else f' and {budget}'}")
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
        # PRJ_DIR is untrusted: nothing in it runs. Its firmware must equal qornn's own project for
        # the same artifact and options, whose cached build (qornn's g++ command) is simulated.
        from qornn.hls.trust import trusted_project

        selected.append(("hls-csim", str(trusted_project(art, hls_dir))))
    if rtl_dir is not None:
        if not Path(rtl_dir).is_dir():
            raise QornnError(f"RTL directory {rtl_dir} not found")
        selected.append(("rtl-verilator", str(rtl_dir)))

    n, m, o = art.hidden_size, art.input_size, art.output_size
    width = max(n, o, m)
    limits = [L for L in (max_length_of(name, where) for name, where in selected) if L is not None]
    if budget is not None and limits:
        length = min(length, min(limits))
    # one sequence is the least a batch holds: inputs, the simulator's and every executor's
    # output and hidden codes, and onnxruntime's float64 intermediates (~3 copies of the hidden codes)
    check_memory(8 * length * (2 * m + (n + o) * (2 + len(selected)) + 3 * n),
                 f"one sequence of {length} steps", "lower --length")
    if budget is None:
        batches = ((((kind, x.shape[0]),), x) for kind, x in fixed_batches(art, sequences, length, seed, width))
    else:
        batches = budget_batches(art, length, seed, width)
    rows = [{"executor": name, "sequences": 0, "steps": 0, "values": 0, "mismatches": 0, "seconds": 0.0}
            for name in ["simulator"] + [s for s, _ in selected]]
    kinds: dict[str, int] = {}
    lengths: set[int] = set()
    first_round = len(length_spread(length))    # a budget run covers every length at least once
    t_start = time.perf_counter()
    for done, (parts, x) in enumerate(batches, 1):
        for kind, count in parts:
            kinds[kind] = kinds.get(kind, 0) + count
        lengths.add(x.shape[1])
        for r in rows:
            r["sequences"] += x.shape[0]
            r["steps"] += x.shape[0] * x.shape[1]
        t0 = time.perf_counter()
        ref = simulate(art, x)
        rows[0]["seconds"] += time.perf_counter() - t0
        rows[0]["values"] += ref.output.size + ref.hidden.size
        for row, (name, where) in zip(rows[1:], selected):
            t0 = time.perf_counter()
            y, h = EXECUTORS[name](art, where, x)
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
        if budget is not None and done >= first_round and all(r["values"] >= budget for r in rows):
            break
    for row in rows:
        row["seconds"] = round(row["seconds"], 3)
        row["steps_per_second"] = round(row["steps"] / row["seconds"]) if row["seconds"] > 0 else None
    report = {"artifact": str(art_dir), "content_sha256": art.content_hash(), "seed": seed,
              "arithmetic": "float64" if art.float64_exact() else "int64",
              "lengths": sorted(lengths), "kinds": kinds, "seconds": round(time.perf_counter() - t_start, 3),
              "rows": rows, "ok": all(r["mismatches"] == 0 for r in rows)}
    if budget is None:
        report["length"] = length
    else:
        report["budget"] = budget
        report["budget_met"] = all(r["values"] >= budget for r in rows)
        if limits and length < DEFAULT_BUDGET_LENGTH:
            report["length_capped_by"] = min(limits)
    return report


def format_table(report: dict) -> str:
    """The report as a Markdown table, what was checked, and a one-line verdict."""
    lines = ["| executor | sequences | steps | values compared | mismatching values | seconds | steps / s |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in report["rows"]:
        what = "golden" if r["executor"] == "simulator" else r["mismatches"]
        rate = f"{r['steps_per_second']:,}" if r.get("steps_per_second") else "-"
        lines.append(f"| {r['executor']} | {r['sequences']:,} | {r['steps']:,} | {r['values']:,} | {what} | "
                     f"{r['seconds']:.2f} | {rate} |")
    for r in report["rows"]:
        if "first_mismatch" in r:
            lines.append(f"first mismatch of {r['executor']}: {r['first_mismatch']}")
    L = report.get("lengths") or [0]
    kinds = ", ".join(f"{v:,} {k}" for k, v in report.get("kinds", {}).items())
    checked = f"sequences: {kinds}; lengths {L[0]}..{L[-1]}; {report.get('seconds', 0):.1f} s in all"
    if "budget" in report:
        least = min(r["values"] for r in report["rows"])
        checked = (f"budget {report['budget']:,} integers per executor: "
                   f"{'met' if report['budget_met'] else 'NOT met'} (least {least:,}); " + checked)
        if "length_capped_by" in report:
            checked += f" (lengths capped at {report['length_capped_by']}, an executor's maximum)"
    others = [r["executor"] for r in report["rows"] if r["executor"] != "simulator"]
    if not others:
        verdict = "no executor selected (pass --onnx, --hls and/or --rtl); the simulator ran alone"
    elif report["ok"]:
        verdict = (f"bit-exact: {', '.join(others)} {'equals' if len(others) == 1 else 'equal'} the simulator "
                   "on every integer")
    else:
        verdict = "MISMATCH: " + ", ".join(f"{r['executor']} differs in {r['mismatches']} values"
                                           for r in report["rows"] if r["mismatches"])
    return "\n".join(lines + [checked, verdict])
