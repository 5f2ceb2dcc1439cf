"""qornn.hls: the QORNN recurrent core as an hls4ml project, bit-exact in C-simulation.

Reads only the exported integer artifact (never torch). Public API:

* ``write_project(art, out_dir, backend='Vitis', reuse_factor=1, part=..., clock_period=5,
  max_length=1024, strategy='Latency', force=False, io_type='io_stream')`` -- generate the project;
* ``compile_project(prj_dir)`` -- hls4ml compile (g++) of the C-simulation library (returns its path);
* ``run_csim(prj_dir, x_codes, art=None, lengths=None)`` -- run it, int64 output codes;
* ``build_project(prj_dir)`` -- HLS synthesis where vitis_hls / vivado_hls exist;
* ``run_testbench(prj_dir)`` -- the project's hls4ml testbench, compiled as the Xilinx csim would;
* ``cached_project(art, **options)`` / ``cached_projects([(art, options), ...])`` -- compiled projects from the cache
  ($QORNN_CACHE or ~/.cache/qornn, under hls/), keyed by artifact content hash + options.

See docs/hardware.md.
"""

from .cache import cache_root, cached_project, cached_projects
from .csim import compile_project, run_csim
from .options import BACKENDS, IO_TYPES, STRATEGIES, HlsOptions, valid_reuse_factors, validate_options
from .project import build_project, read_meta, write_project
from .testbench import run_testbench

__all__ = [
    "BACKENDS", "IO_TYPES", "STRATEGIES", "HlsOptions", "build_project", "cache_root", "cached_project", "cached_projects",
    "compile_project", "read_meta", "run_csim", "run_testbench", "valid_reuse_factors", "validate_options",
    "write_project",
]
