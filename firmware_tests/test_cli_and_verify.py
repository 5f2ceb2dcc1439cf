"""`qornn hls` and the 'hls-csim' executor of `qornn verify`."""

from __future__ import annotations

import json

import numpy as np
import pytest

from qornn.cli import main
from qornn.errors import QornnError
from qornn.export.artifact import save_artifact
from qornn.testing import random_artifact


def test_qornn_hls_writes_and_compiles(tmp_path, capsys):
    art = random_artifact(np.random.default_rng(77), hidden=3, inputs=2, outputs=2, act_bits=5, output_mode="last_step")
    art_dir = save_artifact(art, tmp_path / "art")
    prj = tmp_path / "prj"
    rc = main(["hls", str(art_dir), "--out", str(prj), "--backend", "vivado", "--max-length", "40",
               "--io-type", "io_parallel", "--clock-period", "4", "--part", "xc7z020clg400-1", "--compile"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "hls4ml Vivado project (io_parallel" in out and "C-simulation library qornn_core-" in out and " built in " in out
    meta = json.loads((prj / "qornn_hls.json").read_text())
    assert meta["options"] == {"backend": "Vivado", "reuse_factor": 1, "part": "xc7z020clg400-1",
                               "clock_period": 4, "max_length": 40, "strategy": "Latency", "io_type": "io_parallel"}
    from qornn.verify import verify

    report = verify(str(art_dir), onnx=False, hls_dir=str(prj), sequences=6, length=40, seed=3)
    assert report["ok"] and report["rows"][1]["executor"] == "hls-csim" and report["rows"][1]["values"] > 0
    with pytest.raises(QornnError, match="maximum length 40"):
        verify(str(art_dir), onnx=False, hls_dir=str(prj), sequences=2, length=41)
    # an existing project is kept unless --force
    assert main(["hls", str(art_dir), "--out", str(prj)]) == 2
    assert "already holds an earlier output" in capsys.readouterr().err


@pytest.mark.parametrize("argv, text", [
    (["--backend", "Quartus"], "unknown backend 'Quartus'"),
    (["--reuse-factor", "3", "--strategy", "resource"], "reuse factor 3 does not suit"),
    (["--reuse-factor", "9"], "reuse factor 9 does not suit U.x, V.h"),
    (["--build"], "Vitis HLS not found on PATH"),
])
def test_qornn_hls_errors_are_one_line(tmp_path, capsys, monkeypatch, argv, text):
    monkeypatch.setenv("PATH", "/nonexistent")
    art = random_artifact(np.random.default_rng(78), hidden=4, inputs=2, outputs=2)
    art_dir = save_artifact(art, tmp_path / "art")
    rc = main(["hls", str(art_dir), "--out", str(tmp_path / "prj"), "--max-length", "8", *argv])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("qornn: error: ") and text in err and "\n" not in err


def test_verify_hook_on_cached_projects(projects, tmp_path):
    """verify() with the hls-csim executor on two cached projects (no compile)."""
    from qornn.verify import verify

    for name in ("defaults_h37_relu", "w2_resource_r4"):
        art, prj = projects[name]
        art_dir = save_artifact(art, tmp_path / name)
        report = verify(str(art_dir), onnx=False, hls_dir=str(prj), sequences=8, length=100, seed=1)
        assert report["ok"], report
        row = report["rows"][1]
        assert row["executor"] == "hls-csim" and row["mismatches"] == 0 and row["values"] > 0
    other = save_artifact(projects["tiny"][0], tmp_path / "other")
    with pytest.raises(QornnError, match="different artifact"):
        verify(str(other), onnx=False, hls_dir=str(projects["latency_r2"][1]), sequences=1, length=5)
