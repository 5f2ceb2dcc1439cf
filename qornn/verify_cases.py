"""Input cases for `qornn verify`, generated lazily in batches so memory stays bounded.

Four kinds of sequences, all int64 input codes (B, T, m):

* ``random``: uniform codes over the whole input range;
* ``boundary``: `qornn.testing.boundary_inputs`, noise mixed step by step with +x_max, -x_max
  and 0 (reaches the clamp often, and leaves it again);
* ``saturating``: piecewise-constant full-scale runs of random length (all features +x_max,
  all -x_max, all 0, or a fixed +-x_max pattern), which drive the hidden state into saturation,
  hold it there for many steps, then flip it;
* ``extremes``: the four fixed sequences +x_max, -x_max, 0 and alternating +-x_max.

Two schedules. `fixed_batches` is `--sequences S --length T`: S random sequences of length T,
S/4 boundary ones, the extremes, and a few sequences of length 1. `budget_batches` is
`--budget N`: rounds over a spread of lengths from 1 to `max_length` (log-spaced), each round
one mixed batch per length with every kind in it, the batches doubling from round to round;
`qornn verify` draws from it until every executor has compared at least N integers, so the
whole spread is covered even by a small budget.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

KINDS = ("random", "boundary", "saturating", "extremes")
BATCH_VALUES = 1 << 22     # integers per array of one batch (per executor call): ~32 MB of int64


def extremes(art, length: int) -> np.ndarray:
    """(4, T, m): constant +x_max, -x_max, 0, and +-x_max alternating step by step."""
    xm, m = art.x_max, art.input_size
    alt = np.where(np.arange(length) % 2 == 0, xm, -xm)[:, None]
    return np.stack([np.full((length, m), xm), np.full((length, m), -xm), np.zeros((length, m), dtype=np.int64),
                     np.broadcast_to(alt, (length, m))]).astype(np.int64)


def saturating_inputs(art, rng: np.random.Generator, batch: int, length: int) -> np.ndarray:
    """Full-scale runs of random length (mean ~length/8, at least a few steps)."""
    xm, m = art.x_max, art.input_size
    p_switch = 1.0 / max(4.0, length / 8)
    seg = np.cumsum(rng.random((batch, length)) < p_switch, axis=1)
    n_seg = int(seg.max()) + 1
    whole = rng.choice(np.array([-xm, 0, xm]), size=(batch, n_seg, 1))               # one value for all
    pattern = rng.choice(np.array([-xm, xm]), size=(batch, n_seg, m))                # a fixed sign pattern
    vals = np.where(rng.random((batch, n_seg, 1)) < 0.6, whole, pattern)
    return np.take_along_axis(vals, seg[:, :, None], axis=1).astype(np.int64)


def _kind(art, rng, kind: str, batch: int, length: int) -> np.ndarray:
    from qornn.testing import boundary_inputs

    if kind == "random":
        return rng.integers(-art.x_max, art.x_max + 1, size=(batch, length, art.input_size), dtype=np.int64)
    if kind == "boundary":
        return boundary_inputs(art, rng, batch, length)
    if kind == "saturating":
        return saturating_inputs(art, rng, batch, length)
    return extremes(art, length)


def rows_per_batch(length: int, width: int) -> int:
    """Sequences per executor call so that a (B, T, width) array stays near BATCH_VALUES."""
    return max(1, BATCH_VALUES // (length * max(1, width)))


def fixed_batches(art, sequences: int, length: int, seed: int, width: int) -> Iterator[tuple[str, np.ndarray]]:
    """--sequences/--length: (kind, batch) pairs, each batch at most `rows_per_batch` sequences."""
    rng = np.random.default_rng(seed)
    plan = [("random", sequences, length), ("boundary", max(2, sequences // 4), length), ("extremes", 4, length),
            ("random", max(1, min(sequences, 16)), 1), ("extremes", 3, 1)]
    for kind, count, T in plan:
        if kind == "extremes":
            yield kind, extremes(art, T)[:count]
            continue
        step = rows_per_batch(T, width)
        for i in range(0, count, step):
            yield kind, _kind(art, rng, kind, min(step, count - i), T)


def length_spread(max_length: int, count: int = 8) -> list[int]:
    """Log-spaced lengths from 1 to max_length (both included)."""
    return sorted({int(round(v)) for v in np.geomspace(1, max(1, max_length), count)})


def budget_batches(art, max_length: int, seed: int, width: int) -> Iterator[tuple[list, np.ndarray]]:
    """Endless rounds over `length_spread(max_length)`, longest first; yields
    ([(kind, sequences), ...], batch) with every kind in every batch."""
    rng = np.random.default_rng(seed)
    lengths = length_spread(max_length)[::-1]
    r = 0
    while True:
        for T in lengths:
            each = max(1, min(2**r, (rows_per_batch(T, width) - 4) // 3))
            parts = [(k, _kind(art, rng, k, each, T)) for k in KINDS[:3]] + [("extremes", extremes(art, T))]
            yield [(k, x.shape[0]) for k, x in parts], np.concatenate([x for _, x in parts])
        r += 1
