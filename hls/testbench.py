"""Run a project's own hls4ml testbench the way Vivado/Vitis HLS `csim_design` would.

Every project carries reference sequences in ``tb_data/`` (inputs aimed at saturation, assorted
lengths, outputs from the NumPy simulator). `run_testbench` compiles ``<project>_test.cpp`` with
``firmware/<project>.cpp`` using g++ and ``-std=c++0x`` -- the flags build_prj.tcl gives the
Xilinx tools -- runs it, and compares ``tb_data/csim_results.log`` with
``tb_data/tb_output_predictions.dat`` as integers. It checks the synthesis sources (C++11, the
testbench, the weights compiled from headers) without any Xilinx tool.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from qornn.errors import QornnError

from .project import read_meta


def run_testbench(prj_dir, cxx: str = "g++") -> dict:
    """Compile and run the project's testbench; returns {'sequences', 'values', 'mismatches'}."""
    prj = Path(prj_dir).resolve()
    meta = read_meta(prj)
    name = meta["interface"]["project_name"]
    if shutil.which(cxx) is None:
        raise QornnError(f"{cxx} not found on PATH")
    with tempfile.TemporaryDirectory(prefix="qornn-tb-") as tmp:
        exe = Path(tmp) / "tb"
        cmd = [cxx, "-std=c++0x", "-O0", "-w", "-Ifirmware/ap_types", "-Ifirmware",
               # the Xilinx csim copies firmware/weights next to the testbench (add_files -tb)
               '-DWEIGHTS_DIR="firmware/weights"',
               f"{name}_test.cpp", f"firmware/{name}.cpp", "-o", str(exe)]
        proc = subprocess.run(cmd, cwd=prj, capture_output=True, text=True)
        if proc.returncode != 0:
            raise QornnError(f"the testbench does not compile with -std=c++0x: {proc.stderr.strip()[-400:]}")
        log = prj / "tb_data" / "csim_results.log"
        log.unlink(missing_ok=True)
        proc = subprocess.run([str(exe)], cwd=prj, capture_output=True, text=True)
        if proc.returncode != 0 or not log.is_file():
            raise QornnError(f"the testbench failed (exit {proc.returncode}): {proc.stdout.strip()[-300:]}")
    got = np.loadtxt(log, dtype=np.int64, ndmin=2)
    want = np.loadtxt(prj / "tb_data" / "tb_output_predictions.dat", dtype=np.int64, ndmin=2)
    if got.shape != want.shape:
        raise QornnError(f"testbench wrote {got.shape} values, expected {want.shape}")
    return {"sequences": int(want.shape[0]), "values": int(want.size),
            "mismatches": int(np.count_nonzero(got != want))}
