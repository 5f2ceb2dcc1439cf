"""Throughput of the integer executors, measured side by side in one run.

Hidden 128, batch 256, length 1000, 4-bit weights, 8-bit activations (qornn.testing.random_artifact).
Reports sequence-steps per second (batch x length / seconds), the median over interleaved repeats,
checks that every executor returned exactly the simulator's integers, prints a Markdown table and
writes it as the "## Executors" section of docs/benchmarks.md (other sections are kept).

    .venv/bin/python benchmarks/bench_executors.py [--repeats 5] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np


from _docsection import write_section  # benchmarks/ is on sys.path when run as a script

from qornn.export.onnx_writer import make_session, onnx_bytes, run_onnx
from qornn.export.simulator import simulate
from qornn.testing import boundary_inputs, random_artifact

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
CFG = dict(hidden=128, inputs=10, outputs=10, weight_bits=4, input_bits=8, act_bits=8)
BATCH, LENGTH = 256, 1000
NOTES = """\
- The float64 rows are what real artifacts run: with the exporter's 16-bit multipliers every bound
  stays below 2^53 up to tens of thousands of hidden units. The int64 rows (forced here) are the
  fallback for hand-made artifacts with wider constants; NumPy and onnxruntime have no BLAS for int64.
- The simulator runs its time loop with one BLAS thread. Each step's product is small, and a
  multi-threaded OpenBLAS meets at a barrier every call: on this 2-core machine with other work
  running, one (256x128).(128x128) product took ~16 ms with 2 threads and ~0.6 ms with 1.
- `ORT_ENABLE_ALL` gives the same integers as the pinned `ORT_DISABLE_ALL` (docs/spec.md, "ONNX");
  across runs it was between 20 % slower and 15 % faster, within this machine's noise.
- These machines are shared: repeated runs moved the wall-clock medians by up to ~50 %; the
  simulator measured alone in a quiet process took 0.47-0.58 s for this case, about the same as
  onnxruntime on 1 thread. The CPU-seconds column is the steadier comparison.
"""


def _cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs from /proc/stat (Linux), to report the machine's load."""
    try:
        v = [int(t) for t in open("/proc/stat").readline().split()[1:8]]
    except OSError:
        return 0, 0
    return sum(v) - v[3] - v[4], sum(v)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    ap.add_argument("--only", default=None, help="comma-separated substrings: run only matching executors")
    args = ap.parse_args(argv)

    art = random_artifact(np.random.default_rng(0), **CFG)
    x = boundary_inputs(art, np.random.default_rng(1), BATCH, LENGTH)
    golden = simulate(art, x)
    b64, bint = onnx_bytes(art), onnx_bytes(art, force_int64=True)
    sim = "NumPy simulator, float64 path (BLAS, 1 thread in the time loop)"
    execs = {
        sim: lambda: simulate(art, x),
        "NumPy simulator, int64 path": lambda: simulate(art, x, force_int64=True),
        "onnxruntime, float64 graph, ORT_DISABLE_ALL (pinned), default threads": make_session(b64, "disable_all"),
        "onnxruntime, float64 graph, ORT_DISABLE_ALL, 1 thread": make_session(b64, "disable_all", threads=1),
        "onnxruntime, float64 graph, ORT_ENABLE_ALL, default threads": make_session(b64, "all"),
        "onnxruntime, int64 graph, ORT_DISABLE_ALL, default threads": make_session(bint, "disable_all"),
    }
    if args.only:
        keep = [w.strip().lower() for w in args.only.split(",")]
        execs = {k: v for k, v in execs.items() if k == sim or any(w in k.lower() for w in keep)}
    wall = {k: [] for k in execs}
    cpu = {k: [] for k in execs}
    busy0, total0 = _cpu_ticks()
    own0 = time.process_time()
    for _ in range(args.repeats):
        for name, ex in execs.items():  # interleaved, so drifting machine load hits all alike
            c0, t0 = time.process_time(), time.perf_counter()
            if callable(ex):
                r = ex()
                y, h = r.output, r.hidden
            else:
                y, h = run_onnx(ex, x)
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
            if not (np.array_equal(y, golden.output) and np.array_equal(h, golden.hidden)):
                raise SystemExit(f"{name}: results differ from the simulator")
    busy1, total1 = _cpu_ticks()
    ncpu = os.cpu_count() or 1
    hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    others = ((busy1 - busy0) / hz - (time.process_time() - own0)) / max(1e-9, (total1 - total0) / hz)
    base = statistics.median(wall[sim])
    lines = ["| executor | median wall s | sequence-steps / s | vs simulator | median CPU s | bit-exact |",
             "|---|---:|---:|---:|---:|---|"]
    for name in execs:
        med = statistics.median(wall[name])
        lines.append(f"| {name} | {med:.3f} | {BATCH * LENGTH / med:,.0f} | {base / med:.2f}x | "
                     f"{statistics.median(cpu[name]):.3f} | yes |")
    import onnxruntime

    env = (f"hidden {CFG['hidden']}, input {CFG['inputs']}, output {CFG['outputs']}, "
           f"{CFG['weight_bits']}-bit weights, {CFG['act_bits']}-bit activations, modReLU, every_step "
           f"(hidden codes returned too); batch {BATCH}, length {LENGTH}; median of {args.repeats} interleaved "
           f"repeats. {platform.machine()}, {ncpu} cores, NumPy {np.__version__}, onnxruntime "
           f"{onnxruntime.__version__} (CPU provider). Other processes kept {max(0.0, others) * ncpu:.1f} of "
           f"the {ncpu} cores busy during the run. CPU s = this process's CPU time (all its threads).")
    table = "\n".join(lines)
    print(env)
    print(table)
    if not args.no_write:
        section = ("## Executors\n\n"
                   "Measured by `benchmarks/bench_executors.py` (inputs: `qornn.testing.boundary_inputs`; every run's\n"
                   "output and hidden codes are checked equal to the simulator's before its time counts).\n\n"
                   f"{env}\n\n{table}\n\n{NOTES}")
        write_section(DOC, "Executors", section)
        print(f"wrote the Executors section of {DOC}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
