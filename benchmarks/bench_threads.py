"""Training step time with 1 and 2 torch threads, side by side, at the tasks' sizes.

Why `qornn train` defaults to one thread on small machines (train/threads.py). Each size runs the
real QORNN step (STE-Björck, hidden-state QAT at 8 bits, Adam) in a child process per thread
count, interleaved round by round, so both counts see the same machine load; the table gives the
median step time per count, their ratio, and the load average when the run started. Run it once
on a quiet machine and once on a busy one (e.g. beside a training run).

    .venv/bin/python benchmarks/bench_threads.py [--rounds 5] [--steps 5] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

SIZES = {  # name: (input, hidden, output, length, batch, output mode)
    "copy T0=1000 (h128, L1020, B64)": (10, 128, 9, 1020, 64, "every_step"),
    "copy (h128, L256, B64)": (10, 128, 9, 256, 64, "every_step"),
    "pMNIST (h170, L784, B128)": (1, 170, 10, 784, 128, "last_step"),
}

CHILD = r"""
import json, sys, time, torch
torch.set_num_threads(int(sys.argv[1]))
from qornn.train import QORNN
i, n, o, L, B, mode, steps = json.loads(sys.argv[2])
torch.manual_seed(0)
m = QORNN(i, n, o, weight_bits=5, narrow_range=True, act_bits=8, output_mode=mode, recurrent_init="permutation")
opt = torch.optim.Adam(m.parameters(), lr=1e-3)
x = torch.randn(B, L, i); y = torch.randint(0, o, (B, L) if mode == "every_step" else (B,))
def step():
    out = m(x)
    loss = torch.nn.functional.cross_entropy(out.reshape(-1, o), y.reshape(-1))
    opt.zero_grad(); loss.backward(); opt.step()
step()
ts = []
for _ in range(steps):
    t = time.perf_counter(); step(); ts.append(time.perf_counter() - t)
print(json.dumps(ts))
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=5, help="timed steps per child process")
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args()
    load = os.getloadavg()[0]
    rows = []
    for name, size in SIZES.items():
        times = {1: [], 2: []}
        for r in range(a.rounds):
            for th in ((1, 2) if r % 2 == 0 else (2, 1)):
                out = subprocess.run([sys.executable, "-c", CHILD, str(th), json.dumps([*size, a.steps])],
                                     check=True, capture_output=True, text=True).stdout
                times[th] += json.loads(out.strip().splitlines()[-1])
            print(f"{name}: round {r + 1}/{a.rounds}", file=sys.stderr, flush=True)
        m1, m2 = statistics.median(times[1]), statistics.median(times[2])
        rows.append(f"| {name} | {m1 * 1e3:.0f} | {m2 * 1e3:.0f} | {m2 / m1:.2f}x |")
    table = "\n".join(["| size | 1 thread (ms/step) | 2 threads (ms/step) | 2 / 1 |", "|---|---:|---:|---:|", *rows])
    import torch

    section = (f"## Training threads\n\n`python benchmarks/bench_threads.py --rounds {a.rounds} --steps {a.steps}` on "
               f"{os.cpu_count()} cores, torch {torch.__version__}, load average {load:.1f} at the start; "
               f"medians of {a.rounds * a.steps} "
               "steps per cell, the two counts interleaved (STE-Björck 5-bit, hidden-state QAT at 8 bits, "
               "Adam).\n\n" + table + "\n")
    print(section)
    if not a.no_write:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from _docsection import write_section

        write_section(Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md", "Training threads", section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
