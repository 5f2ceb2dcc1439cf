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
    """The task `name` (copy, adding, smnist, pmnist, ptb-char) with its options, e.g. ``length`` or
    ``pixels_per_step``; an option given as None takes the task's default."""
    if name not in TASKS:
        raise QornnError(f"unknown task {name!r}; choose one of {', '.join(sorted(TASKS))}")
    cls = TASKS[name]
    try:
        return cls(**{k: v for k, v in options.items() if v is not None})
    except TypeError as e:
        raise QornnError(f"task {name!r}: {e}") from None


def eval_data(task, batches: int | None = 4, batch_size: int = 128, seed: int = 12345):
    """Held-out batches: the test split of a finite dataset (its first `batches` batches; None = all),
    else fresh batches from a fixed seed. Every executor is scored on exactly these."""
    import itertools

    import numpy as np

    if hasattr(task, "eval_batches"):
        yield from itertools.islice(task.eval_batches(batch_size), batches)
        return
    rng = np.random.default_rng(seed)
    for _ in range(batches or 4):
        yield task.batch(batch_size, rng)
