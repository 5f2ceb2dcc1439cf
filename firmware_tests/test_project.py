"""What a generated project holds, its synthesis sources, the cache, and the no-torch rule."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml

from qornn.export.artifact import load_artifact
from qornn.export.simulator import simulate
from qornn.hls import cached_project, read_meta, run_csim
from qornn.hls.csim import library_path, library_ready
from qornn.hls.testbench import run_testbench


@pytest.mark.parametrize("name, backend", [("tiny", "vitis"), ("big_c", "vivado")])
def test_a_normal_hls4ml_project(projects, name, backend):
    art, prj = projects[name]
    meta = read_meta(prj)
    opts = meta["options"]
    for f in ["build_prj.tcl", "project.tcl", "build_lib.sh", "hls4ml_config.yml", "qornn_core_bridge.cpp",
              "qornn_core_test.cpp", "firmware/qornn_core.cpp", "firmware/qornn_core.h", "firmware/parameters.h",
              "firmware/defines.h", "firmware/nnet_utils/nnet_qornn.h", "firmware/nnet_utils/nnet_dense.h",
              "tb_data/tb_input_features.dat", "tb_data/tb_output_predictions.dat"]:
        assert (prj / f).is_file(), f
    tcl = (prj / "project.tcl").read_text()
    assert f'set part "{opts["part"]}"' in tcl and f"set clock_period {opts['clock_period']}" in tcl
    assert f'set backend "{backend}"' in tcl
    assert (prj / "build_opt.tcl").is_file() == (backend == "vitis")
    assert "csynth_design" in (prj / "build_prj.tcl").read_text()
    cfg = yaml.safe_load((prj / "hls4ml_config.yml").read_text())
    assert cfg["Backend"].lower() == backend and cfg["IOType"] == opts["io_type"]
    assert Path(cfg["OutputDir"]) == Path(prj).resolve()
    names = ["qornn_input"] if opts["io_type"] == "io_stream" else ["qornn_input", "qornn_length"]
    assert list(cfg["InputShapes"]) == names
    assert meta["artifact"]["content_hash"] == art.content_hash()
    assert load_artifact(prj / "artifact").content_hash() == art.content_hash()
    # hls4ml itself can link the project and run it
    from hls4ml.utils.link import FilesystemModelGraph

    model = FilesystemModelGraph(prj)
    assert [v.name for v in model.get_input_variables()] == names


def test_weights_are_exact_decimal_integers(projects):
    """c near 2^49 would lose digits through hls4ml's float formatting; the header holds them exactly."""
    art, prj = projects["big_c"]
    text = "".join(p.read_text() for p in (prj / "firmware" / "weights").glob("qc*.h"))
    for v in art.c:
        assert str(int(v)) in text
    x = np.random.default_rng(1).integers(-art.x_max, art.x_max + 1, size=(2, 40, art.input_size))
    assert np.array_equal(run_csim(prj, x, art), simulate(art, x).output)


@pytest.mark.parametrize("name", ["h37_last_w8_a16", "resource_r8"])
def test_testbench_as_the_xilinx_csim_runs_it(projects, name, tmp_path):
    """build_prj.tcl's csim step: the hls4ml testbench + firmware compiled with -std=c++0x, on the
    project's reference data (from the simulator), equals it."""
    _, prj = projects[name]
    copy = shutil.copytree(prj, tmp_path / "prj")
    report = run_testbench(copy)
    assert report["sequences"] >= 4 and report["values"] > 0 and report["mismatches"] == 0


def test_a_moved_project_is_compiled_again(projects, tmp_path):
    """The C-sim library reads its weights from the directory it was compiled in: a copy is not
    ready until compiled, and run_csim compiles it."""
    art, prj = projects["tiny"]
    assert library_ready(prj)
    copy = shutil.copytree(prj, tmp_path / "moved")
    assert not library_ready(copy)
    x = np.random.default_rng(3).integers(-art.x_max, art.x_max + 1, size=(3, 64, art.input_size))
    assert np.array_equal(run_csim(copy, x, art), simulate(art, x).output)
    assert library_ready(copy)


def test_cache_hit_compiles_nothing(projects):
    art, prj = projects["tiny"]
    from .cases import options

    lib = library_path(prj)
    before = lib.stat().st_mtime_ns
    assert cached_project(art, **options("tiny")) == prj
    assert lib.stat().st_mtime_ns == before


def test_no_torch_anywhere(projects, tmp_path):
    """Project generation, compilation and C-simulation never import torch (nor TF / keras)."""
    art, prj = projects["tiny"]
    script = textwrap.dedent(f"""
        import sys
        import numpy as np
        from qornn.hls import write_project, compile_project, run_csim
        from qornn.testing import random_artifact
        art = random_artifact(np.random.default_rng(5), hidden=3, inputs=2, outputs=2)
        write_project(art, {str(tmp_path / 'p')!r}, max_length=4)
        from qornn.hls.cache import cached_projects
        from qornn.hls.csim import build_library, linked_model
        x = np.zeros((1, 3, 1), dtype=np.int64)
        y = run_csim({str(prj)!r}, x)
        bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'tensorflow', 'keras'))
        print('IMPORTED:', bad)
        sys.exit(1 if bad else 0)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "IMPORTED: []" in proc.stdout
    assert (tmp_path / "p" / "qornn_hls.json").is_file()
    assert json.loads((tmp_path / "p" / "qornn_hls.json").read_text())["options"]["max_length"] == 4


def _fake_tool(bin_dir: Path, name: str, log: Path) -> None:
    """A stand-in for a Xilinx tool: records its arguments and the build options it would read."""
    tool = bin_dir / name
    tool.write_text(f"#!/bin/sh\necho \"$@\" >> {log}\n[ -f build_opt.tcl ] && cat build_opt.tcl >> {log}\nexit 0\n")
    tool.chmod(0o755)


@pytest.mark.parametrize("name, tool", [("tiny", "vitis_hls"), ("tiny", "vitis-run"), ("big_c", "vivado_hls")])
def test_build_runs_the_projects_synthesis_script(projects, tmp_path, monkeypatch, name, tool):
    """build_project drives build_prj.tcl with the tool on PATH (a fake one here: no Xilinx tools)."""
    from qornn.hls import build_project

    prj = shutil.copytree(projects[name][1], tmp_path / "prj")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "tool.log"
    _fake_tool(bin_dir, tool, log)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    before = (prj / "build_opt.tcl").read_text() if (prj / "build_opt.tcl").exists() else None
    report = build_project(prj)
    assert isinstance(report, dict)
    calls = log.read_text()
    assert "build_prj.tcl" in calls
    if tool == "vivado_hls":
        assert "csim=False" in calls and "synth=True" in calls
    else:
        assert "synth      1" in calls and "csim       0" in calls
    if tool == "vitis_hls":  # the project's own defaults are put back
        assert (prj / "build_opt.tcl").read_text() == before


def test_native_accumulator_type_boundaries():
    """DenseLatencyNative sums in `int` only while the accumulator's spec width fits 32 bits."""
    from qornn.hls.layer import native_accum_type

    assert [native_accum_type(w) for w in (1, 2, 31, 32)] == ["int"] * 4
    assert [native_accum_type(w) for w in (33, 34, 63, 64)] == ["long long"] * 4
    for w in (0, 65):
        with pytest.raises(ValueError):
            native_accum_type(w)
