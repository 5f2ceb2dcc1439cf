"""The C-simulation of every firmware project equals the NumPy simulator, integer for integer.

Each project is checked on several kinds of input (uniform random codes, boundary-seeking runs
at the project's maximum length, constant full-scale runs, a ragged batch with per-sequence
lengths including 1); comparisons are np.array_equal on int64, nothing else.
"""

from __future__ import annotations

import numpy as np
import pytest

from qornn.export.simulator import simulate
from qornn.hls import read_meta, run_csim
from qornn.testing import boundary_inputs

from .cases import ALL, compare


def _max_len(prj) -> int:
    return read_meta(prj)["options"]["max_length"]


def _check(art, prj, x, lengths=None):
    y = run_csim(prj, x, art, lengths=lengths)
    assert y.dtype == np.int64
    if lengths is None:
        want = simulate(art, x).output
    else:
        rows = [simulate(art, x[i:i + 1, :L]).output[0] for i, L in enumerate(lengths)]
        if art.output_mode == "every_step":
            want = np.zeros_like(y)
            for i, (r, L) in enumerate(zip(rows, lengths)):
                want[i, :L] = r
        else:
            want = np.stack(rows)
    assert y.shape == want.shape
    if not compare(y, want, x, lengths):
        idx = tuple(np.argwhere(y != want)[0])
        pytest.fail(f"{np.count_nonzero(y != want)} of {y.size} outputs differ; first at {idx}: "
                    f"firmware {y[idx]}, simulator {want[idx]}")
    return y.size


@pytest.mark.parametrize("name", ALL)
def test_random_codes(projects, name):
    art, prj = projects[name]
    rng = np.random.default_rng(100)
    T = min(_max_len(prj), 300)
    x = rng.integers(-art.x_max, art.x_max + 1, size=(16, T, art.input_size))
    _check(art, prj, x)


@pytest.mark.parametrize("name", ALL)
def test_boundary_inputs_full_length(projects, name):
    """Inputs aimed at saturation, over the project's whole maximum length."""
    art, prj = projects[name]
    rng = np.random.default_rng(200)
    T = _max_len(prj)
    x = boundary_inputs(art, rng, 8, T)
    _check(art, prj, x)
    h = simulate(art, x).hidden
    # the inputs do reach the clamp (h = h_max, or -h_max for modReLU) somewhere
    assert np.any(np.abs(h) == art.h_max)


@pytest.mark.parametrize("name", ALL)
def test_constant_full_scale_runs(projects, name):
    art, prj = projects[name]
    T, m, xm = min(_max_len(prj), 150), art.input_size, art.x_max
    alt = np.where(np.arange(T) % 2 == 0, xm, -xm)[:, None] * np.ones((1, m), dtype=np.int64)
    x = np.stack([np.full((T, m), xm), np.full((T, m), -xm), np.zeros((T, m)), alt]).astype(np.int64)
    _check(art, prj, x)


@pytest.mark.parametrize("name", ALL)
def test_ragged_lengths(projects, name):
    """The runtime length input: each sequence of one batch stops at its own length."""
    art, prj = projects[name]
    rng = np.random.default_rng(300)
    T = min(_max_len(prj), 120)
    lengths = np.array(sorted({1, 2, T // 3 or 1, T - 1 or 1, T}), dtype=np.int64)
    x = boundary_inputs(art, rng, len(lengths), T)
    _check(art, prj, x, lengths=lengths)
    # length-1 sequences, batched
    x1 = rng.integers(-art.x_max, art.x_max + 1, size=(5, 1, art.input_size))
    _check(art, prj, x1)
