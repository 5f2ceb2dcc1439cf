"""Long sequences, the maximum length, and proof that the comparison would catch a wrong core."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from qornn.errors import QornnError
from qornn.export.simulator import simulate
from qornn.hls import run_csim
from qornn.testing import boundary_inputs, with_requant

from .cases import PERTURBED, compare


def test_sequences_of_1000_and_1024_steps(projects):
    """The all-defaults project (max length 1024): whole sequences of 1024 and 1000 steps."""
    art, prj = projects["defaults_h37_relu"]
    rng = np.random.default_rng(7)
    for T in (1024, 1000):
        x = boundary_inputs(art, rng, 3, T)
        assert compare(run_csim(prj, x, art), simulate(art, x).output, x)


def test_length_300_in_a_default_project(projects):
    art, prj = projects["defaults_h37_relu"]
    x = np.random.default_rng(8).integers(-art.x_max, art.x_max + 1, size=(5, 300, art.input_size))
    y = run_csim(prj, x, art)
    assert y.shape == (5, 300, art.output_size)
    assert compare(y, simulate(art, x).output, x)


def test_io_stream_has_no_maximum_length(projects):
    """The all-defaults project (io_stream, the stream protocol): a 5,000-step sequence, then
    sequences of 1, 3 and 1,500 steps back to back with no gap, in one C-simulation call."""
    from qornn.hls.csim import run_stream

    art, prj = projects["defaults_h37_relu"]
    rng = np.random.default_rng(17)
    x = boundary_inputs(art, rng, 1, 5000)
    assert compare(run_csim(prj, x, art), simulate(art, x).output, x)
    seqs = [boundary_inputs(art, rng, 1, L)[0] for L in (1, 3, 1500, 1)]
    for y, s in zip(run_stream(prj, seqs, art), seqs):
        assert compare(y, simulate(art, s[None]).output[0], s[None])


def test_io_parallel_above_the_maximum_length_is_a_one_line_error(projects):
    art, prj = projects["h37_last_w8_a16"]
    x = np.zeros((1, 257, art.input_size), dtype=np.int64)
    with pytest.raises(QornnError) as e:
        run_csim(prj, x, art)
    msg = str(e.value)
    assert "\n" not in msg and "257" in msg and "maximum length 256" in msg and "--max-length" in msg


def test_firmware_of_a_perturbed_artifact_is_caught(projects):
    """One recurrent weight off by one LSB: its firmware equals its own artifact's simulator but
    not the original's, and run_csim refuses to pair it with the original artifact."""
    art, _ = projects["latency_r2"]
    bad_art, bad_prj = projects[PERTURBED]
    assert np.count_nonzero(bad_art.W != art.W) == 1
    x = boundary_inputs(art, np.random.default_rng(9), 4, 96)
    y_bad = run_csim(bad_prj, x)          # no artifact given: no hash check
    assert np.array_equal(y_bad, simulate(bad_art, x).output)
    assert not np.array_equal(y_bad, simulate(art, x).output)
    with pytest.raises(QornnError, match="different artifact"):
        run_csim(bad_prj, x, art)


@pytest.mark.parametrize("change", ["b", "shift_w", "shift_u", "m_w", "m_u", "V", "c"])
def test_every_parameter_matters(projects, change):
    """The firmware of `latency_r2` against the simulator of a one-parameter variant: must differ."""
    art, prj = projects["latency_r2"]
    if change == "b":
        b = art.b.copy()
        b[0] += 1
        other = dataclasses.replace(art, b=b)
    elif change == "V":
        V = art.V.copy()
        V[0, 0] = V[0, 0] + 1 if V[0, 0] < 3 else V[0, 0] - 1
        other = dataclasses.replace(art, V=V)
    elif change == "c":
        other = dataclasses.replace(art, c=art.c + np.array([1] + [0] * (art.output_size - 1)))
    else:  # a multiplier stays odd (lowest terms); a shift moves by one
        other = with_requant(art, **{change: getattr(art, change) + (2 if change.startswith("m_") else 1)})
    x = boundary_inputs(art, np.random.default_rng(10), 4, 96)
    y = run_csim(prj, x, art)
    assert np.array_equal(y, simulate(art, x).output)
    assert not np.array_equal(y, simulate(other.validate(), x).output)
