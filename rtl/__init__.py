"""qornn.rtl: synthesizable Verilog cores of an artifact, bit-exact in Verilator, priced by open tools.

Reads only the exported integer artifact (never torch). Public API:

* ``write_rtl(art, out_dir, arch='parallel', lanes=None, target='ice40-up5k', force=False)``;
* ``run_rtl(rtl_dir, x_codes, art=None, seed=0)`` -> (y, h) codes; ``run_stream`` for ragged streams;
* ``synthesize(rtl_dir, target=None)`` -> report (yosys + nextpnr; report.json / report.md).

See docs/hardware.md.
"""

from .project import ARCHS, TARGETS, read_meta, write_rtl
from .sim import run_rtl, run_stream

__all__ = ["ARCHS", "TARGETS", "read_meta", "run_rtl", "run_stream", "write_rtl"]
