"""Bad options and inputs: one-line QornnError messages, and nothing half-written on disk."""

from __future__ import annotations

import json

import numpy as np
import pytest

from qornn.errors import QornnError
from qornn.export.artifact import save_artifact
from qornn.hls import build_project, run_csim, valid_reuse_factors, write_project
from qornn.testing import random_artifact


@pytest.fixture(scope="module")
def art():
    return random_artifact(np.random.default_rng(42), hidden=37, inputs=5, outputs=3)


def _one_line(excinfo) -> str:
    msg = str(excinfo.value)
    assert msg and "\n" not in msg
    return msg


def test_unknown_backend(art, tmp_path):
    with pytest.raises(QornnError) as e:
        write_project(art, tmp_path / "p", backend="Quartus")
    assert "unknown backend 'Quartus'" in _one_line(e) and "Vivado" in str(e.value)
    assert not (tmp_path / "p").exists()


@pytest.mark.parametrize("kw, text", [
    (dict(reuse_factor=2, strategy="Resource"), "reuse factor 2 does not suit W.h, U.x, V.h"),
    (dict(reuse_factor=112), "reuse factor 112 does not suit V.h (hidden 37, inputs 5, outputs 3, Latency"),
    (dict(reuse_factor=0), "reuse factor must be in 1.."),
    (dict(reuse_factor="4"), "reuse factor must be an integer"),
    (dict(strategy="Fast"), "unknown strategy 'Fast'"),
    (dict(io_type="io_serial"), "unknown io type"),
    (dict(part="xc7 z020; exec rm"), "invalid FPGA part"),
    (dict(clock_period=0), "clock period must be a positive number"),
    (dict(max_length=0), "max length must be in 1.."),
])
def test_bad_options(art, tmp_path, kw, text):
    with pytest.raises(QornnError) as e:
        write_project(art, tmp_path / "p", **kw)
    assert text in _one_line(e)
    assert not (tmp_path / "p").exists()
    assert list(tmp_path.iterdir()) == []    # no temporary directory left behind


def test_reuse_factor_error_lists_the_valid_ones():
    art = random_artifact(np.random.default_rng(1), hidden=16, inputs=4, outputs=4)
    assert valid_reuse_factors(16, 4, 4) == [1, 2, 4, 8, 16, 32, 64]
    assert valid_reuse_factors(64, 10, 10) == [1, 2]
    assert valid_reuse_factors(64, 10, 10, "Latency") == list(range(1, 641))
    with pytest.raises(QornnError, match=r"valid reuse factors for this model: 1, 2, 4, 8, 16, 32, 64$"):
        write_project(art, "/nonexistent/never-written", reuse_factor=3, strategy="Resource")
    with pytest.raises(QornnError, match=r"valid reuse factors for this model: 1\.\.64$"):
        write_project(art, "/nonexistent/never-written", reuse_factor=65)


def test_out_dir_holding_other_files(art, tmp_path):
    out = tmp_path / "p"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(QornnError) as e:
        write_project(art, out)
    assert "already holds other files" in _one_line(e) and "--force" in str(e.value)
    assert (out / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p"]


def test_out_dir_holding_an_earlier_project_needs_force(art, tmp_path):
    out = write_project(art, tmp_path / "p", max_length=8)
    with pytest.raises(QornnError, match="already holds an earlier output"):
        write_project(art, out, max_length=8)
    write_project(art, out, max_length=9, force=True)
    assert json.loads((out / "qornn_hls.json").read_text())["options"]["max_length"] == 9


def test_unsupported_schema_version(art, tmp_path):
    art_dir = save_artifact(art, tmp_path / "art")
    spec = json.loads((art_dir / "qornn.json").read_text())
    spec["schema_version"] = 3
    (art_dir / "qornn.json").write_text(json.dumps(spec))
    with pytest.raises(QornnError) as e:
        write_project(art_dir, tmp_path / "p")
    assert "schema_version" in _one_line(e) and "got 3" in str(e.value)
    assert not (tmp_path / "p").exists()


def test_not_an_artifact(tmp_path):
    with pytest.raises(QornnError, match="not found"):
        write_project(tmp_path / "missing", tmp_path / "p")
    with pytest.raises(QornnError, match="expected an Artifact"):
        write_project({"W": 1}, tmp_path / "p")


def test_run_csim_rejects_bad_inputs(projects):
    art, prj = projects["resource_r8"]
    m = art.input_size
    cases = [
        (np.zeros((2, 5, m + 1), dtype=np.int64), "input must have shape"),
        (np.zeros((2, 5, m)), "integer input codes"),
        (np.full((1, 5, m), art.x_max + 1, dtype=np.int64), "input codes must lie in"),
    ]
    for x, text in cases:
        with pytest.raises(QornnError) as e:
            run_csim(prj, x, art)
        assert text in _one_line(e)
    with pytest.raises(QornnError, match="lengths must be"):
        run_csim(prj, np.zeros((2, 5, m), dtype=np.int64), art, lengths=[3, 6])


def test_run_csim_on_a_directory_that_is_not_a_project(tmp_path):
    with pytest.raises(QornnError, match="not a qornn firmware project"):
        run_csim(tmp_path, np.zeros((1, 1, 1), dtype=np.int64))
    with pytest.raises(QornnError, match="not found"):
        run_csim(tmp_path / "nope", np.zeros((1, 1, 1), dtype=np.int64))


def test_build_without_xilinx_tools(projects, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    _, vitis_prj = projects["tiny"]
    with pytest.raises(QornnError) as e:
        build_project(vitis_prj)
    assert _one_line(e).startswith("Vitis HLS not found on PATH")
    _, vivado_prj = projects["big_c"]
    with pytest.raises(QornnError, match="Vivado HLS not found on PATH"):
        build_project(vivado_prj)


def test_outputs_beyond_float64_are_refused_by_csim(tmp_path):
    """The firmware is exact at any width, but io_parallel's predict() carries float64: outputs
    >= 2^53 cannot come back exactly, so run_csim says so (before compiling anything). The
    io_stream driver carries int64 (test_io_stream_outputs_beyond_float64)."""
    art = random_artifact(np.random.default_rng(3), hidden=2, inputs=1, outputs=1)
    art.c = np.array([1 << 60], dtype=np.int64)
    prj = write_project(art.validate(), tmp_path / "p", max_length=4, io_type="io_parallel")
    with pytest.raises(QornnError, match="exceed 2\\^53"):
        run_csim(prj, np.zeros((1, 2, 1), dtype=np.int64), art)
    assert not (prj / "qornn_csim.json").exists()
    text = "".join(p.read_text() for p in (prj / "firmware" / "weights").glob("qc*.txt"))
    assert str(1 << 60) in text


def test_io_stream_outputs_beyond_float64(tmp_path):
    """The io_stream batch driver returns int64 codes: an output bias near 2^60 comes back exactly."""
    from qornn.export.simulator import simulate

    art = random_artifact(np.random.default_rng(3), hidden=2, inputs=1, outputs=1)
    art.c = np.array([(1 << 60) + 3], dtype=np.int64)
    art = art.validate()
    prj = write_project(art, tmp_path / "p")
    x = np.random.default_rng(4).integers(-art.x_max, art.x_max + 1, size=(2, 30, 1))
    assert np.array_equal(run_csim(prj, x, art), simulate(art, x).output)
