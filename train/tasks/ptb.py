"""Character-level Penn TreeBank: predict the next character, scored in bits per character.

Data: the character-level PTB derived in qornn.train.datasets (50 symbols, 5.0M / 393k / 442k
characters). Training batches are random windows of `length` characters from the train split
(input one-hot of characters t, target character t+1 at every step). ``eval_batches`` cuts the
evaluation split into consecutive non-overlapping windows; the hidden state starts at zero in
each window and a final remainder shorter than a window is dropped, so the reported bpc is
slightly pessimistic compared with carrying the state over the whole text.
bpc = cross-entropy / ln 2. Naive baseline: the unigram entropy of the train split (4.33 bits on
real PTB), i.e. predicting character frequencies without any context.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from qornn.errors import QornnError

EVAL_SPLITS = ("valid", "test")


class PTBCharTask:
    name = "ptb-char"
    output_mode = "every_step"
    metric = "bpc"
    higher_is_better = False

    def __init__(self, length: int = 150, eval_split: str = "test", data=None):
        """data: optional (train_ids, eval_ids, vocab) with vocab a string (symbol i has id i),
        instead of the cached derived PTB (loaded on construction: it is small)."""
        if not isinstance(length, int) or length < 1:
            raise QornnError(f"ptb-char: length must be a positive integer, got {length!r}")
        if eval_split not in EVAL_SPLITS:
            raise QornnError(f"ptb-char: eval_split must be valid or test, got {eval_split!r}")
        self.length, self.eval_split = length, eval_split
        if data is None:
            from qornn.train.datasets import load_ptb_char, ptb_char_vocab
            data = (load_ptb_char("train"), load_ptb_char(eval_split), ptb_char_vocab())
        if len(data) != 3:
            raise QornnError("ptb-char: data must be (train_ids, eval_ids, vocab)")
        train, evals, self.vocab = np.asarray(data[0]), np.asarray(data[1]), data[2]
        self.input_size = self.output_size = len(self.vocab)
        for split, ids in (("train", train), ("eval", evals)):
            if ids.ndim != 1 or len(ids) <= length:
                raise QornnError(f"ptb-char: the {split} split must be 1-D and longer than length={length}")
            if ids.min() < 0 or ids.max() >= len(self.vocab):
                raise QornnError(f"ptb-char: the {split} split has ids outside the vocabulary of {len(self.vocab)}")
        self.train_ids, self.eval_ids = train, evals
        p = np.bincount(train, minlength=len(self.vocab)) / len(train)
        p = p[p > 0]
        self._unigram_bits = float(-(p * np.log2(p)).sum())

    def config(self) -> dict:
        return {"name": self.name, "length": self.length, "eval_split": self.eval_split}

    def windows(self, ids: np.ndarray, starts: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Windows of length+1 characters at `starts` -> one-hot x (B, T, V) float32, y (B, T) int64."""
        w = ids[starts[:, None] + np.arange(self.length + 1)].astype(np.int64)
        x = np.eye(self.input_size, dtype=np.float32)[w[:, :-1]]
        return torch.from_numpy(x), torch.from_numpy(w[:, 1:])

    def batch(self, batch_size: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        starts = rng.integers(0, len(self.train_ids) - self.length, size=batch_size)
        return self.windows(self.train_ids, starts)

    def eval_batches(self, batch_size: int):
        """Consecutive non-overlapping windows covering the evaluation split, in order."""
        starts = np.arange(0, len(self.eval_ids) - self.length, self.length)
        for i in range(0, len(starts), batch_size):
            yield self.windows(self.eval_ids, starts[i:i + batch_size])

    def baseline(self) -> float:
        return self._unigram_bits

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))

    @torch.no_grad()
    def metrics(self, logits, y) -> dict:
        logits = torch.as_tensor(logits, dtype=torch.float32)
        y = torch.as_tensor(y, dtype=torch.int64)
        loss = float(self.loss(logits, y))
        acc = float((logits.argmax(-1) == y).float().mean())
        return {"loss": loss, "bpc": loss / math.log(2), "accuracy": acc, "baseline": self.baseline()}
