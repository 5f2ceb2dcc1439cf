"""Copy-memory task (Hochreiter & Schmidhuber; Arjovsky et al.): recall R symbols after a long blank delay.

Input symbols: 0 = blank, 1..A = alphabet, A+1 = marker (one-hot, A+2 features).
Sequence of total length L: R random symbols, blanks, the marker at L-R-1, then R blanks.
Target: blank everywhere except the last R steps, which must repeat the R symbols (A+1 classes).
Naive baseline (blank, then uniform guesses): cross-entropy R ln(A) / L.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from qornn.errors import QornnError


class CopyTask:
    name = "copy"
    output_mode = "every_step"
    metric = "accuracy"  # per-symbol accuracy on the recall positions
    higher_is_better = True

    def __init__(self, length: int = 100, alphabet: int = 8, recall: int = 10):
        if alphabet < 1 or recall < 1:
            raise QornnError("copy task: alphabet and recall must be positive")
        if length < 2 * recall + 1:
            raise QornnError(f"copy task: length must be at least 2*recall+1 = {2 * recall + 1}, got {length}")
        self.length, self.alphabet, self.recall = length, alphabet, recall
        self.input_size = alphabet + 2
        self.output_size = alphabet + 1

    def config(self) -> dict:
        return {"name": self.name, "length": self.length, "alphabet": self.alphabet, "recall": self.recall}

    def tokens(self, batch_size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Integer input symbols and targets, both (batch, length)."""
        L, A, R = self.length, self.alphabet, self.recall
        symbols = rng.integers(1, A + 1, size=(batch_size, R))
        inp = np.zeros((batch_size, L), dtype=np.int64)
        inp[:, :R] = symbols
        inp[:, L - R - 1] = A + 1
        tgt = np.zeros((batch_size, L), dtype=np.int64)
        tgt[:, L - R:] = symbols
        return inp, tgt

    def batch(self, batch_size: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        inp, tgt = self.tokens(batch_size, rng)
        x = np.eye(self.input_size, dtype=np.float32)[inp]
        return torch.from_numpy(x), torch.from_numpy(tgt)

    def baseline(self) -> float:
        return self.recall * math.log(self.alphabet) / self.length

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))

    @torch.no_grad()
    def metrics(self, logits: torch.Tensor, y: torch.Tensor) -> dict:
        logits = torch.as_tensor(logits, dtype=torch.float32)
        y = torch.as_tensor(y)
        pred = logits[:, -self.recall:].argmax(-1)
        acc = (pred == y[:, -self.recall:]).float().mean()
        return {"loss": float(self.loss(logits, y)), "accuracy": float(acc), "baseline": self.baseline()}
