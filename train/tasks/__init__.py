"""Tasks of the QORNN paper. Each task makes batches (x: float (B, T, F), y: int64 class targets, or
float32 for the adding task's regression) from a NumPy Generator, so a seed fixes the data, and
scores logits with its own loss and metrics. Finite datasets (MNIST, PTB) sample training batches
from their train split and offer ``eval_batches(batch_size)`` over the test split."""

from __future__ import annotations

from qornn.errors import QornnError

from .adding import AddingTask
from .copy import CopyTask
from .mnist import PermutedMNISTTask, SequentialMNISTTask
from .ptb import PTBCharTask

TASKS = {
    "copy": CopyTask,
    "adding": AddingTask,
    "smnist": SequentialMNISTTask,
    "pmnist": PermutedMNISTTask,
    "ptb-char": PTBCharTask,
}


def make_task(name: str, **options):
    if name not in TASKS:
        raise QornnError(f"unknown task {name!r}; choose one of {', '.join(sorted(TASKS))}")
    cls = TASKS[name]
    try:
        return cls(**{k: v for k, v in options.items() if v is not None})
    except TypeError as e:
        raise QornnError(f"task {name!r}: {e}") from None
