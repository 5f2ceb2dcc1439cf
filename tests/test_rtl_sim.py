"""rtl/parallel.py without Verilator: which signals the parallel core's W.h product depends on."""

from __future__ import annotations

import re

import numpy as np

from qornn.testing import random_artifact


def test_parallel_w_product_reads_the_h_register_only():
    """The start beat's h = 0 is applied after W.h (W.0 = 0), so the largest product depends on no
    input port and a simulator evaluates it once per clock."""
    from qornn.rtl.parallel import generate

    art = random_artifact(np.random.default_rng(4), hidden=6, inputs=3, outputs=2)
    for solver in ("csd", "auto"):
        v, _ = generate(art, solver=solver)
        hp = [ln for ln in v.splitlines() if re.match(r"wire signed \[\d+:0\] hp\d+ = ", ln)]
        assert len(hp) == 6 and all(ln.endswith(f"= h[{8 * j + 7}:{8 * j}];") for j, ln in enumerate(hp))
        assert v.count("in_start ?") == 6     # one zeroing mux per row, after its W.h sum
