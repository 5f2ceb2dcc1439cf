"""Score the integer simulator on a task with the same held-out batches as the trainer's `evaluate`."""

from __future__ import annotations

import numpy as np
import torch

from .artifact import Artifact
from .simulator import simulate


def evaluate_artifact(art: Artifact, task, batches: int = 4, batch_size: int = 128, seed: int = 12345) -> dict:
    rng = np.random.default_rng(seed)
    acc: dict[str, float] = {}
    for _ in range(batches):
        x, y = task.batch(batch_size, rng)
        res = simulate(art, x.numpy().astype(np.float64), return_hidden=False)
        m = task.metrics(torch.from_numpy(res.output_real), y)
        for k, v in m.items():
            if v is not None:
                acc[k] = acc.get(k, 0.0) + v / batches
    return acc
