"""`qornn rtl`: write the Verilog of one artifact's core, its port description and its test bench.

DIR/
  qornn_core.v     the core (stream protocol of docs/hardware.md, with the dbg_h verification ports)
  qornn_top.v      the synthesis top: the core without dbg_* ports
  qornn_rtl.json   artifact content hash, options, sizes, widths, ports, cycles per step
  tb/harness.cpp, tb/qornn_tb.h   the Verilator test bench (qornn verify --rtl builds and runs it)
  artifact/        copy of the artifact the core was generated from
  report.json, report.md          after --synth
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from qornn.atomic import commit_dir, prepare_dir
from qornn.errors import QornnError

RTL_FILE = "qornn_rtl.json"
RTL_FORMAT = "qornn-rtl-core"
RTL_VERSION = 1
ARCHS = ("parallel", "folded")
TARGETS = ("ice40-up5k", "ice40-hx8k", "ecp5-25k", "ecp5-85k", "xilinx")
ARTIFACT_SUBDIR = "artifact"


@dataclass(frozen=True)
class RtlOptions:
    arch: str = "parallel"
    lanes: int = 1
    target: str = "ice40-up5k"
    solver: str = "auto"      # parallel: adder graphs of W.h, U.x, V.h (rtl/cmvm.py): auto | alkaid | csd
    solver_dc: int = -1       # alkaid's hard delay constraint: adder depth above the minimum (-1: none)

    def as_dict(self) -> dict:
        return asdict(self)


def validate_options(art, arch="parallel", lanes=None, target="ice40-up5k", solver="auto",
                     solver_dc=-1) -> RtlOptions:
    from .cmvm import SOLVERS

    if arch not in ARCHS:
        raise QornnError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHS)}")
    if target not in TARGETS:
        raise QornnError(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}")
    if lanes is None:
        lanes = 1 if arch == "parallel" else min(4, art.hidden_size)
    if isinstance(lanes, bool) or not isinstance(lanes, int) or lanes < 1:
        raise QornnError(f"--lanes must be a positive integer, got {lanes!r}")
    if arch == "parallel" and lanes != 1:
        raise QornnError("--lanes applies to the folded architecture only (parallel computes every row at once)")
    if lanes > art.hidden_size:
        raise QornnError(f"--lanes {lanes} exceeds the hidden size {art.hidden_size}")
    if solver not in SOLVERS:
        raise QornnError(f"unknown solver {solver!r}; choose one of {', '.join(SOLVERS)}")
    if isinstance(solver_dc, bool) or not isinstance(solver_dc, int) or solver_dc < -1:
        raise QornnError(f"--solver-dc must be an integer >= -1, got {solver_dc!r}")
    if arch != "parallel" and (solver != "auto" or solver_dc != -1):
        raise QornnError("--solver / --solver-dc apply to the parallel architecture only (the folded core multiplies "
                         "ROM weights)")
    if solver == "csd" and solver_dc != -1:
        raise QornnError("--solver-dc is alkaid's depth constraint; it does not apply to --solver csd")
    return RtlOptions(arch=arch, lanes=lanes, target=target, solver=solver, solver_dc=solver_dc)


def _as_artifact(art):
    from qornn.hls.project import _as_artifact as load

    return load(art)


def generate_verilog(art, opts: RtlOptions) -> tuple[str, dict]:
    if opts.arch == "parallel":
        from .parallel import generate
        return generate(art, solver=opts.solver, hard_dc=opts.solver_dc)
    from .folded import generate
    return generate(art, opts.lanes)


def rtl_meta(art, opts: RtlOptions, stats: dict) -> dict:
    from qornn import __version__

    from .stream import port_list

    return {
        "format": RTL_FORMAT, "version": RTL_VERSION,
        "artifact": {"content_hash": art.content_hash(), "copy": ARTIFACT_SUBDIR},
        "options": opts.as_dict(),
        "model": {"input_size": art.input_size, "hidden_size": art.hidden_size, "output_size": art.output_size,
                  "activation": art.activation, "output_mode": art.output_mode, "input_bits": art.input_bits,
                  "act_bits": art.act_bits, "x_max": art.x_max,
                  "bits": {"W": art.recurrent_bits, "U": art.input_weight_bits, "V": art.output_bits}},
        "widths": art.widths(),
        "ports": port_list(art),
        "stats": stats,
        "versions": {"qornn": __version__},
    }


def write_rtl(art, out_dir, arch: str = "parallel", lanes: int | None = None, target: str = "ice40-up5k",
              force: bool = False, solver: str = "auto", solver_dc: int = -1) -> Path:
    """Generate the core of `art` (an Artifact or an artifact directory) into `out_dir`, atomically."""
    from qornn.export.artifact import save_artifact

    from .stream import synth_top
    from .verilator import HARNESS, tb_header

    art = _as_artifact(art)
    opts = validate_options(art, arch, lanes, target, solver, solver_dc)
    verilog, stats = generate_verilog(art, opts)
    meta = rtl_meta(art, opts, stats)
    out = Path(out_dir)
    tmp = prepare_dir(out, force, marker=RTL_FILE)
    try:
        (tmp / "qornn_core.v").write_text(verilog)
        (tmp / "qornn_top.v").write_text(synth_top(art))
        (tmp / "tb").mkdir()
        shutil.copy(HARNESS, tmp / "tb" / "harness.cpp")
        (tmp / "tb" / "qornn_tb.h").write_text(tb_header(meta))
        save_artifact(art, tmp / ARTIFACT_SUBDIR)
        (tmp / RTL_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        commit_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def read_meta(rtl_dir) -> dict:
    d = Path(rtl_dir)
    path = d / RTL_FILE
    if not d.is_dir():
        raise QornnError(f"RTL directory {d} not found (write one with `qornn rtl ART --out {d}`)")
    if not path.is_file():
        raise QornnError(f"{d} is not a qornn RTL directory ({RTL_FILE} missing)")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise QornnError(f"{path}: not valid JSON") from None
    if not isinstance(meta, dict) or meta.get("format") != RTL_FORMAT:
        raise QornnError(f"{path}: not a qornn RTL description")
    if meta.get("version") != RTL_VERSION:
        raise QornnError(f"{path}: version {meta.get('version')!r}, this qornn reads {RTL_VERSION}; regenerate it")
    if not (d / "qornn_core.v").is_file():
        raise QornnError(f"{d}/qornn_core.v missing; regenerate with `qornn rtl`")
    return meta
