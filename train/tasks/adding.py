"""Adding task (Hochreiter & Schmidhuber; Le et al. 2015; Arjovsky et al. 2016): add two marked numbers.

Input (2 features per step): a value drawn from U(0, 1) and a marker that is 1 at exactly two
steps, one in the first half of the sequence and one in the second half, so the network must
remember a value across up to `length` steps. Target: the sum of the two marked values, read at
the last step (one real output, mean squared error). Naive baseline: always answer 1, the mean
of the target, whose MSE is the target's variance 2/12 ≈ 0.167.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from qornn.errors import QornnError


class AddingTask:
    name = "adding"
    output_mode = "last_step"
    metric = "mse"
    higher_is_better = False
    input_size = 2
    output_size = 1

    def __init__(self, length: int = 100):
        if not isinstance(length, int) or length < 2:
            raise QornnError(f"adding task: length must be an integer of at least 2, got {length!r}")
        self.length = length

    def config(self) -> dict:
        return {"name": self.name, "length": self.length}

    def batch(self, batch_size: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, 2) float32; y (B,) float32 targets (a regression task: not int64 classes)."""
        T, half = self.length, self.length // 2
        values = rng.random((batch_size, T), dtype=np.float32)
        rows = np.arange(batch_size)
        first = rng.integers(0, half, size=batch_size)
        second = rng.integers(half, T, size=batch_size)
        markers = np.zeros((batch_size, T), dtype=np.float32)
        markers[rows, first] = markers[rows, second] = 1.0
        y = values[rows, first] + values[rows, second]
        return torch.from_numpy(np.stack([values, markers], axis=-1)), torch.from_numpy(y)

    def baseline(self) -> float:
        return 1 / 6

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(logits.reshape(y.shape), y.to(logits.dtype))

    @torch.no_grad()
    def metrics(self, logits, y) -> dict:
        logits = torch.as_tensor(logits, dtype=torch.float32)
        y = torch.as_tensor(y, dtype=torch.float32)
        mse = float(self.loss(logits, y))
        return {"loss": mse, "mse": mse, "baseline": self.baseline()}
