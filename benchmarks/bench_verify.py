"""Verification throughput of the hardware executors (issue 13): sequence-steps per second that
`qornn verify --hls` (C-simulation) and `--rtl` (Verilator) check against the simulator.

Each case is a random artifact (inputs 10, outputs 10, 4-bit W and U, 8-bit x, h and V, modReLU,
every_step); the input is a batch of boundary-seeking sequences run through the executor in one
call (the executors stream all sequences back to back), timed as wall and CPU seconds, and every
output (and, for RTL, hidden) code is checked equal to the simulator's before its time counts.
Build times are reported apart (builds are cached). Writes the section "Verification
throughput" of docs/benchmarks.md.

    nice python benchmarks/bench_verify.py [--sizes 16 128] [--length 1000] [--batch 16]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def _cpu() -> float:
    """CPU seconds of this process and its finished children (the Verilator harness runs as one)."""
    import resource

    ch = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + ch.ru_utime + ch.ru_stime


def _timed(fn):
    t0, c0 = time.perf_counter(), _cpu()
    out = fn()
    return out, time.perf_counter() - t0, _cpu() - c0


def main():
    from qornn.export.simulator import simulate
    from qornn.hls import cached_project, run_csim
    from qornn.hls.csim import _stream_lib
    from qornn.rtl import run_rtl, write_rtl
    from qornn.rtl.sim import executable
    from qornn.testing import boundary_inputs, random_artifact

    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", nargs="+", type=int, default=[16, 128])
    ap.add_argument("--length", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "qornn-bench-verify"))
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    rows = []
    for n in args.sizes:
        art = random_artifact(np.random.default_rng(1), hidden=n, inputs=10, outputs=10, weight_bits=4,
                              act_bits=8, input_bits=8, output_bits=8)
        x = boundary_inputs(art, np.random.default_rng(1), args.batch, args.length)
        ref = simulate(art, x)
        steps = x.shape[0] * x.shape[1]
        prj, t_build, _ = _timed(lambda: cached_project(art))
        _stream_lib(prj)
        y, wall, cpu = _timed(lambda: run_csim(prj, x, art))
        assert np.array_equal(y, ref.output)
        rows.append((f"hls4ml C-sim, io_stream batch driver (g++ -O2)", n, steps, wall, cpu, t_build))
        for arch, lanes in (("parallel", None), ("folded", 8)):
            if arch == "folded" and n > 32:
                continue   # hundreds of clocks per step: far below the target, measured on small n only
            d = write_rtl(art, Path(args.work) / f"{arch}_{n}", arch=arch, lanes=lanes, force=True)
            _, t_build, _ = _timed(lambda: executable(d))
            for stalls in ((100, 100), (75, 75)):
                (yr, hr), wall, cpu = _timed(lambda: run_rtl(d, x, art, stalls=stalls))
                assert np.array_equal(yr, ref.output) and np.array_equal(hr, ref.hidden)
                rows.append((f"Verilator, {arch}{f' {lanes} lanes' if lanes else ''}, valid/ready {stalls[0]} %/"
                             f"{stalls[1]} %", n, steps, wall, cpu, t_build))
        for r in rows[-4:]:
            print(f"{r[0]:<60} n={r[1]:>4}: {r[2] / r[3]:>10,.0f} steps/s wall, {r[2] / r[4]:>10,.0f} per CPU s")
    if args.no_write:
        return
    from _docsection import write_section

    load = os.getloadavg()[0]
    lines = ["## Verification throughput", "",
             f"`benchmarks/bench_verify.py`: sequence-steps per second checked by `qornn verify --hls` / `--rtl` "
             f"(random artifact, inputs 10, outputs 10, 4-bit W/U, 8-bit x/h/V, modReLU, every_step; {args.batch} "
             f"boundary-seeking sequences of {args.length} steps back to back in one call; every code checked `==` "
             f"before the time counts). {platform.machine()}, {os.cpu_count()} cores, 1-minute load {load:.1f} at "
             "the end (other jobs on the machine): the per-CPU-second column is the steadier one.", "",
             "| executor | hidden | steps | wall s | steps/s (wall) | steps per CPU s | build s (0: cached) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, n, steps, wall, cpu, build in rows:
        lines.append(f"| {name} | {n} | {steps} | {wall:.2f} | {steps / wall:,.0f} | {steps / cpu:,.0f} | {build:.0f} |")
    lines += ["", "Before (docs/hardware.md of the previous release, hls4ml `predict`, io_stream with max length, "
              "8 x 1024 steps): hidden 16 92,000, hidden 37 20,000, hidden 64 11,600, hidden 128 4,000 steps/s.", "",
              "Against the goal of 10^5 sequence-steps per second: met at hidden 16 per CPU second by both executors "
              "(the batch driver removed hls4ml's per-sample bridge; one harness process streams every sequence), "
              "missed at hidden 128. There the work itself dominates, not the calls: the C-simulation runs "
              "hls4ml's `nnet::dense` over `ap_int` types, about 10 ns per multiply-accumulate with g++ -O2 "
              "(-O3 -march=native was not faster), and a step is 128 x 138 + 10 x 128 = 18,944 of them; the "
              "parallel core evaluates its ~25k adders every clock in Verilator. Both scale with n^2, so hidden 128 "
              "costs ~64x hidden 16. First builds measured in an earlier run of this script, under the same load: "
              "Verilator parallel 124 s (hidden 16) and 1,235 s (hidden 128), folded 40 s; C-simulation 17-22 s. Ways to close it, not taken here: run several processes (one per core: 2x on "
              "this machine), a C-simulation-only native-integer product (which would stop checking the code that "
              "is synthesized), Verilator `--threads`, or alkaid's shared adder graph (fewer adders to evaluate).",
              ""]
    write_section(HERE.parent / "docs" / "benchmarks.md", "Verification throughput", "\n".join(lines))


if __name__ == "__main__":
    main()
