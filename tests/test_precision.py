"""Precision planning: Huffman/entropy footprints, the energy estimate, SQNR, --target-sqnr and
`qornn sensitivity`."""

import itertools
import json
import math

import numpy as np
import pytest

from qornn.cli import main
from qornn.export.costs import add_pj, energy_per_step, entropy_bits, footprint, huffman_bits, mul_pj
from qornn.export.sqnr import sqnr_db
from qornn.testing import random_artifact


def _optimal_prefix_length(counts):
    """Brute force over every full binary tree shape: the best average code length (small alphabets)."""
    from functools import lru_cache

    counts = sorted(counts)

    @lru_cache(None)
    def best(items):
        if len(items) == 1:
            return 0
        out = math.inf
        for r in range(1, len(items)):
            for left in itertools.combinations(range(len(items)), r):
                if 0 not in left:
                    continue
                lt = tuple(items[i] for i in left)
                rt = tuple(items[i] for i in range(len(items)) if i not in left)
                out = min(out, best(lt) + best(rt) + sum(items))
        return out

    return best(tuple(counts)) / sum(counts)


def test_huffman_is_optimal_and_within_entropy_plus_one():
    rng = np.random.default_rng(0)
    for _ in range(40):
        k = int(rng.integers(2, 7))
        counts = rng.integers(1, 50, size=k)
        codes = np.repeat(np.arange(k), counts)
        h, hb = entropy_bits(codes), huffman_bits(codes)
        assert h <= hb + 1e-12 < h + 1
        assert hb == pytest.approx(_optimal_prefix_length(counts.tolist()), abs=1e-12)
    assert huffman_bits(np.zeros(10, dtype=int)) == 1.0 and entropy_bits(np.zeros(10, dtype=int)) == 0.0


def test_footprint_and_energy():
    rng = np.random.default_rng(1)
    art = random_artifact(rng, hidden=20, inputs=4, outputs=3, weight_bits=4, act_bits=8)
    fp = footprint(art)
    assert fp["tensors"]["W"]["raw_bits"] == 400 * 4
    assert fp["huffman_bytes"] <= fp["integer_bytes"] + 1
    narrow = random_artifact(np.random.default_rng(1), hidden=20, inputs=4, outputs=3, recurrent_bits=2,
                             input_weight_bits=3, narrow=("W",), act_bits=6)
    assert footprint(narrow)["raw_bits"] < fp["raw_bits"]
    e, e2 = energy_per_step(art), energy_per_step(narrow)
    assert 0 < e2["integer_pj"] < e["integer_pj"] < e["float32_pj"]
    assert energy_per_step(art, "logic")["operations_pj"]["weight reads"] == 0
    assert add_pj(8) == pytest.approx(0.03) and add_pj(32) == pytest.approx(0.1)
    assert mul_pj(8, 8) == pytest.approx(0.2, rel=0.05) and mul_pj(32, 32) == pytest.approx(3.1, rel=0.05)


def test_sqnr():
    x = np.array([1.0, -2.0, 3.0])
    assert sqnr_db(x, x) == math.inf
    assert sqnr_db(x, x + 0.1) == pytest.approx(10 * math.log10(14 / 0.03))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("prec")
    assert main(["train", "--task", "copy", "--length", "25", "--hidden", "10", "--steps", "60", "--lr", "5e-3",
                 "--out", str(d / "run")]) == 0
    return d


def test_target_sqnr_picks_the_smallest_width(run, capsys):
    from qornn.export.artifact import load_artifact

    d = run
    assert main(["export", str(d / "run"), "--target-sqnr", "25", "--out", str(d / "a")]) == 0
    art = load_artifact(d / "a")
    s = art.provenance["sqnr_db"]["h"]
    assert s >= 25
    assert main(["export", str(d / "run"), "--act-bits", str(art.act_bits - 1), "--out", str(d / "b")]) == 0
    below = load_artifact(d / "b").provenance["sqnr_db"]["h"]
    assert below < 25
    out = capsys.readouterr().out
    assert "SQNR" in out and "Huffman" in out and "pJ per step" in out
    assert main(["export", str(d / "run"), "--target-sqnr", "500", "--out", str(d / "c")]) == 2
    assert "no hidden-state width" in capsys.readouterr().err and not (d / "c").exists()


def test_sensitivity_command(run, capsys):
    d = run
    assert main(["sensitivity", str(d / "run"), "--out", str(d / "s"), "--eval-batches", "1",
                 "--budget-bits", "600"]) == 0
    r = json.loads((d / "s" / "sensitivity.json").read_text())
    assert set(r["table"]) == {"W", "U", "V", "h", "x"}
    assert list(r["table"]["W"]) == ["4", "3", "2", "1"] and list(r["table"]["h"])[-1] == "2"
    rec = r["recommendation"]
    assert rec["weight_bits"] <= 600 and 0 <= rec["measured"] <= 1
    assert (d / "s" / "sensitivity.png").stat().st_size > 1000
    assert main(["sensitivity", str(d / "run"), "--out", str(d / "s")]) == 2          # exists: --force
    assert main(["sensitivity", str(d / "run"), "--out", str(d / "t"), "--budget-bits", "10"]) == 2
    err = capsys.readouterr().err
    assert "--force" in err and "1-bit floor" in err and not (d / "t").exists()
