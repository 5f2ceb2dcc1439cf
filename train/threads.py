"""How many CPU threads torch trains with.

A QORNN step is a chain of small (batch x hidden) @ (hidden x hidden) products, one per time step:
too small to split well, and a second thread on a 2-core machine that is busy with anything else
waits for the core at every step. Measured on the 2-core machines (benchmarks/bench_threads.py,
docs/benchmarks.md, "Training threads"): beside other work two threads were 1.9-4.7x slower than
one at the tasks' sizes; in another run ("Training step") they were 1.6x faster. The loss outweighs the gain
where a second core is rarely free, so: one thread up to 4 cores, half the cores above (at most 8).
"""

from __future__ import annotations

import os

from qornn.errors import QornnError

MAX_THREADS = 1024


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_threads(cores: int | None = None) -> int:
    cores = available_cores() if cores is None else cores
    return 1 if cores <= 4 else min(cores // 2, 8)


def set_threads(n: int | None) -> int:
    """Set torch's intra-op threads (None: `default_threads()`); returns the count used."""
    import torch

    if n is None:
        n = default_threads()
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_THREADS:
        raise QornnError(f"--threads must be an integer in 1..{MAX_THREADS}, got {n!r}")
    torch.set_num_threads(n)
    return n
