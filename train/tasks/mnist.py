"""Sequential MNIST (Le et al. 2015): classify a digit read one pixel per step, 784 steps.

``smnist`` reads pixels in raster order; ``pmnist`` applies the fixed permutation
``np.random.RandomState(92916).permutation(784)`` used throughout the orthogonal-RNN literature,
which spreads the informative pixels over the whole sequence. Pixels are scaled to [0, 1]; the
class is read at the last step. ``pixels_per_step`` > 1 feeds consecutive (permuted) pixels
together (784 / p steps of p features), for fast experiments only: the paper uses 1.
Batches sample the 60k training images; ``eval_batches`` walks the 10k test images in order.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from qornn.errors import QornnError

PIXELS = 784
PMNIST_SEED = 92916


def pmnist_permutation() -> np.ndarray:
    return np.random.RandomState(PMNIST_SEED).permutation(PIXELS)


class SequentialMNISTTask:
    name = "smnist"
    output_mode = "last_step"
    metric = "accuracy"
    higher_is_better = True
    output_size = 10
    permuted = False

    def __init__(self, pixels_per_step: int = 1, data=None):
        """data: optional (train_images, train_labels, test_images, test_labels), images uint8 (N, 784),
        instead of the cached real MNIST (loaded lazily, on first use)."""
        if not isinstance(pixels_per_step, int) or pixels_per_step < 1 or PIXELS % pixels_per_step:
            raise QornnError(f"{self.name}: pixels_per_step must divide 784, got {pixels_per_step!r}")
        self.pixels_per_step = pixels_per_step
        self.input_size = pixels_per_step
        self.length = PIXELS // pixels_per_step
        self.order = pmnist_permutation() if self.permuted else np.arange(PIXELS)
        self._data = None
        if data is not None:
            if len(data) != 4:
                raise QornnError(f"{self.name}: data must be (train_images, train_labels, test_images, test_labels)")
            self._data = tuple(np.asarray(a) for a in data)
            for images in self._data[::2]:
                if images.ndim != 2 or images.shape[1] != PIXELS:
                    raise QornnError(f"{self.name}: images must have shape (N, 784), got {images.shape}")

    def config(self) -> dict:
        return {"name": self.name, "pixels_per_step": self.pixels_per_step}

    def data(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        if self._data is None:
            from qornn.train.datasets import load_mnist
            self._data = (*load_mnist("train"), *load_mnist("test"))
        return self._data

    def sequences(self, images: np.ndarray, labels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images (B, 784) -> x (B, 784/p, p) float32 in [0, 1], y (B,) int64."""
        x = images[:, self.order].astype(np.float32) / 255.0
        x = x.reshape(len(images), self.length, self.pixels_per_step)
        return torch.from_numpy(x), torch.from_numpy(labels.astype(np.int64))

    def batch(self, batch_size: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        train_x, train_y, _, _ = self.data()
        idx = rng.integers(0, len(train_x), size=batch_size)
        return self.sequences(train_x[idx], train_y[idx])

    def eval_batches(self, batch_size: int):
        """The whole test split, in order (the last batch may be smaller)."""
        _, _, test_x, test_y = self.data()
        for i in range(0, len(test_x), batch_size):
            yield self.sequences(test_x[i:i + batch_size], test_y[i:i + batch_size])

    def baseline(self) -> float:
        return 0.1  # chance

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, y)

    @torch.no_grad()
    def metrics(self, logits, y) -> dict:
        logits = torch.as_tensor(logits, dtype=torch.float32)
        y = torch.as_tensor(y, dtype=torch.int64)
        acc = (logits.argmax(-1) == y).float().mean()
        return {"loss": float(self.loss(logits, y)), "accuracy": float(acc), "baseline": self.baseline()}


class PermutedMNISTTask(SequentialMNISTTask):
    name = "pmnist"
    permuted = True
