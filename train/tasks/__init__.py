"""Tasks of the QORNN paper. Each task makes batches (x: float (B, T, F), y: int64 targets) from a
NumPy Generator, so a seed fixes the data, and scores logits with its own loss and metrics."""

from __future__ import annotations

from qornn.errors import QornnError

from .copy import CopyTask

TASKS = {"copy": CopyTask}


def make_task(name: str, **options):
    if name not in TASKS:
        raise QornnError(f"unknown task {name!r}; choose one of {', '.join(sorted(TASKS))}")
    return TASKS[name](**{k: v for k, v in options.items() if v is not None})
