"""rtl/sim.py and rtl/parallel.py without Verilator: how run_stream cuts the sequences into groups
for its harness processes, and which signals the parallel core's W.h product depends on."""

from __future__ import annotations

import re

import numpy as np
import pytest

from qornn.rtl.sim import _groups, default_workers
from qornn.testing import random_artifact


@pytest.mark.parametrize("lens, workers", [
    ([5], 4), ([1, 1, 1], 8), ([1000] * 16, 2), ([1000] * 16, 3), ([1, 3000, 2, 2], 2), ([3000, 1, 1], 4),
    ([7, 1, 40, 2, 25, 1, 60], 3), (list(range(1, 30)), 5), ([10] * 4, 1), ([10] * 4, None),
])
def test_groups_are_contiguous_nonempty_and_balanced(lens, workers):
    lens = np.array(lens, dtype=np.int64)
    g = _groups(lens, workers)
    k = workers or default_workers()
    assert 1 <= len(g) <= min(k, len(lens))
    assert g[0][0] == 0 and g[-1][1] == len(lens) and all(a < b for a, b in g)
    assert all(g[i][1] == g[i + 1][0] for i in range(len(g) - 1))
    k = min(k, len(lens))
    for a, b in g[:-1]:   # a group ends with the sequence that crosses a multiple of total / k
        assert any(lens[:b - 1].sum() < lens.sum() * i / k <= lens[:b].sum() for i in range(1, k))
    if len(set(lens.tolist())) == 1 and len(lens) % k == 0:
        assert len(g) == k and len({b - a for a, b in g}) == 1   # equal sequences: equal groups


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


def test_build_key_covers_verilator_options(monkeypatch):
    """A cached Verilator build is reused only for the same Verilog, harness, make flags and options."""
    from qornn.rtl import verilator

    meta = {"model": {"input_size": 2, "hidden_size": 3, "output_size": 1, "input_bits": 8, "act_bits": 8,
                      "output_mode": "every_step"}, "widths": {"out": 12}}
    k = verilator.build_key("module m; endmodule", meta)
    assert verilator.build_key("module m; endmodule", meta) == k
    monkeypatch.setattr(verilator, "VERILATOR_ARGS", ["--output-split-cfuncs", "100"])
    assert verilator.build_key("module m; endmodule", meta) != k
