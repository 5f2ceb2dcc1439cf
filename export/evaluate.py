"""Score the integer simulator on a task, on exactly the held-out data the trainer evaluates on."""

from __future__ import annotations

import numpy as np
import torch

from .artifact import Artifact
from .simulator import simulate


def evaluate_artifact(art: Artifact, task, batches: int | None = 4, batch_size: int = 128, seed: int = 12345) -> dict:
    from qornn.train.tasks import eval_data
    from qornn.train.trainer import MetricMean

    mean = MetricMean()
    for x, y in eval_data(task, batches, batch_size, seed):
        res = simulate(art, x.numpy().astype(np.float64), return_hidden=False)
        mean.add(task.metrics(torch.from_numpy(res.output_real), y), len(y))
    return mean.result()
