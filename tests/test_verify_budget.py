"""`qornn verify --budget N`: at least N integers per executor, every kind of sequence, lengths
spread from 1 to 3000; and the case generators really reach what they aim at."""

import json

import numpy as np
import pytest

from qornn import verify as verify_mod
from qornn.cli import main
from qornn.export.artifact import save_artifact
from qornn.export.onnx_writer import build_onnx, onnx_bytes
from qornn.export.simulator import simulate
from qornn.testing import random_artifact
from qornn.verify import format_table, verify
from qornn.verify_cases import KINDS, budget_batches, extremes, fixed_batches, length_spread, saturating_inputs

MEDIUM = 1_000_000


@pytest.fixture(scope="module")
def art_dir(tmp_path_factory):
    art = random_artifact(np.random.default_rng(40), hidden=24, inputs=4, outputs=3)
    return art, save_artifact(art, tmp_path_factory.mktemp("v") / "art", extra_files={"model.onnx": onnx_bytes(art)})


def test_budget_is_met_on_every_kind_and_length(art_dir):
    _, path = art_dir
    report = verify(path, onnx=True, budget=MEDIUM, seed=3)
    assert report["ok"] and report["budget_met"]
    assert [r["executor"] for r in report["rows"]] == ["simulator", "onnx"]
    assert all(r["values"] >= MEDIUM and r["mismatches"] == 0 for r in report["rows"])
    assert report["lengths"] == length_spread(3000) and report["lengths"][0] == 1 and report["lengths"][-1] == 3000
    assert set(report["kinds"]) == set(KINDS) and all(v > 0 for v in report["kinds"].values())
    text = format_table(report)
    assert "budget 1,000,000 integers per executor: met" in text and "lengths 1..3000" in text
    assert "bit-exact" in text


def test_a_small_budget_still_covers_the_spread(art_dir):
    _, path = art_dir
    report = verify(path, onnx=False, budget=1, length=100)
    assert report["budget_met"] and report["lengths"] == length_spread(100)
    assert report["rows"][0]["sequences"] == len(length_spread(100)) * 7     # one round: 3 kinds + 4 extremes
    assert "no executor selected" in format_table(report)


def test_budget_finds_a_forged_onnx(art_dir, tmp_path):
    from test_onnx import _tamper
    from qornn.export import onnx_writer

    art, _ = art_dir
    model = _tamper(build_onnx(art))
    for p in model.metadata_props:
        if p.key == "qornn.graph_sha256":
            p.value = onnx_writer._graph_hash(model)
    bad = save_artifact(art, tmp_path / "bad", extra_files={"model.onnx": model.SerializeToString()})
    report = verify(bad, onnx=True, budget=10_000)
    assert not report["ok"] and report["rows"][1]["mismatches"] > 0 and "MISMATCH" in format_table(report)


def test_an_executor_maximum_caps_the_lengths(art_dir, tmp_path, monkeypatch):
    """A fake 'hls-csim' that is the simulator itself, compiled for at most 200 steps."""
    art, path = art_dir
    seen = []

    def fake(a, where, x):
        seen.append(x.shape[1])
        assert x.shape[1] <= 200
        return simulate(a, x, return_hidden=False).output, None

    monkeypatch.setitem(verify_mod.EXECUTORS, "hls-csim", fake)
    monkeypatch.setattr(verify_mod, "max_length_of", lambda name, where: 200 if name == "hls-csim" else None)
    # no real project: skip the check that --hls holds qornn's own firmware (firmware_tests cover it)
    monkeypatch.setattr("qornn.hls.trust.trusted_project", lambda a, d: d)
    report = verify(path, onnx=False, hls_dir=str(tmp_path), budget=50_000)
    assert report["ok"] and report["length_capped_by"] == 200 and max(seen) == 200
    assert report["rows"][1]["values"] >= 50_000          # outputs only: it returns no hidden codes
    assert "capped at 200" in format_table(report)


def test_cli_budget_json_and_counts(art_dir, capsys):
    _, path = art_dir
    assert main(["verify", str(path), "--onnx", "--budget", "200000", "--length", "500"]) == 0
    out = capsys.readouterr().out
    assert "budget 200,000 integers per executor: met" in out and "lengths 1..500" in out and " s in all" in out
    assert main(["verify", str(path), "--onnx", "--budget", "200000", "--length", "500", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["budget"] == 200_000 and report["budget_met"] and report["rows"][1]["values"] >= 200_000


def test_fixed_mode_is_unchanged(art_dir):
    art, _ = art_dir
    got = list(fixed_batches(art, 10, 40, seed=0, width=24))
    counts = {}
    for kind, x in got:
        counts[(kind, x.shape[1])] = counts.get((kind, x.shape[1]), 0) + x.shape[0]
    assert counts == {("random", 40): 10, ("boundary", 40): 2, ("extremes", 40): 4, ("random", 1): 10,
                      ("extremes", 1): 3}


def test_fixed_mode_streams_big_requests(art_dir, monkeypatch):
    """Many long sequences come in batches of bounded size, never as one array."""
    from qornn import verify_cases

    art, _ = art_dir
    monkeypatch.setattr(verify_cases, "BATCH_VALUES", 10_000)
    batches = list(fixed_batches(art, 50, 300, seed=0, width=24))
    assert sum(x.shape[0] for _, x in batches) == 50 + 12 + 4 + 16 + 3
    sizes = [x.shape[0] * x.shape[1] * 24 for kind, x in batches if kind != "extremes"]    # extremes: 4 rows
    assert max(sizes) <= 10_000 and len(sizes) > 50


def test_generators_reach_the_saturation_they_aim_at():
    art = random_artifact(np.random.default_rng(41), hidden=32, inputs=6, act_bits=8)
    rng = np.random.default_rng(0)
    x = saturating_inputs(art, rng, 8, 400)
    assert set(np.unique(x)) <= {-art.x_max, 0, art.x_max}
    runs = np.count_nonzero(np.any(x[:, 1:] != x[:, :-1], axis=2)) / (8 * 399)
    assert runs < 0.2                                   # piecewise constant: few switches
    h = simulate(art, x).hidden
    held = (np.abs(h[:, 1:]) == art.h_max) & (h[:, 1:] == h[:, :-1])
    assert held.mean() > 0.05                           # saturated and held there
    assert (h == art.h_max).any() and (h == -art.h_max).any()
    e = extremes(art, 5)
    assert e.shape == (4, 5, 6) and e[0].min() == art.x_max and e[1].max() == -art.x_max and not e[2].any()
    assert np.array_equal(e[3, :, 0], [art.x_max, -art.x_max] * 2 + [art.x_max])


def test_budget_rounds_grow_and_cover_every_length():
    art = random_artifact(np.random.default_rng(42), hidden=8, inputs=2)
    gen = budget_batches(art, 3000, seed=0, width=8)
    first = [next(gen) for _ in range(2 * len(length_spread(3000)))]
    lengths = [x.shape[1] for _, x in first]
    assert lengths[:8] == sorted(length_spread(3000), reverse=True) == lengths[8:]
    assert [dict(parts)["random"] for parts, _ in first] == [1] * 8 + [2] * 8
    assert all([k for k, _ in parts] == list(KINDS) for parts, _ in first)
