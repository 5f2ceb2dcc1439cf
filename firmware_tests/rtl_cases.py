"""The RTL configurations under test: a few fixed corner cases plus seeded random ones.

Each configuration is one Verilator build (cached by content in $QORNN_CACHE/rtl), so the list
stays short; together they cover hidden 1 and 33, weight bits 1..8 with mixed W/U widths and
narrow ranges, activation bits 2..16, input bits 2..16, both activations, both output modes,
shift 0, power-of-two and 16-bit multipliers, and both architectures (folded with lanes that do
and do not divide the hidden size). The parallel cores use the default solver (auto: alkaid's
shared adder graphs, rtl/cmvm.py); po2_h16_csd is the CSD-tree core of po2_h16 and
w8_shift0_last_dc0 alkaid's depth-constrained graph (--solver-dc 0).
"""

from __future__ import annotations

import numpy as np

from qornn.testing import random_artifact

FIXED = {
    "tiny_w1_a2": (1, dict(hidden=1, inputs=1, outputs=1, weight_bits=1, input_bits=2, act_bits=2, output_bits=1),
                   dict(arch="parallel")),
    "h33_narrow_w2_u7_a16_relu_last": (2, dict(hidden=33, inputs=5, outputs=3, recurrent_bits=2, input_weight_bits=7,
                                               narrow=("W",), input_bits=16, act_bits=16, output_bits=8,
                                               activation="relu", output_mode="last_step"), dict(arch="parallel")),
    "w8_shift0_last": (3, dict(hidden=9, inputs=3, outputs=4, weight_bits=8, input_bits=12, act_bits=4, output_bits=5,
                               output_mode="last_step", shift=0), dict(arch="parallel")),
    "po2_h16": (4, dict(hidden=16, inputs=10, outputs=9, weight_bits=4, act_bits=8, m_w=1, m_u=1, shift=3),
                dict(arch="parallel")),
    "po2_h16_csd": (4, dict(hidden=16, inputs=10, outputs=9, weight_bits=4, act_bits=8, m_w=1, m_u=1, shift=3),
                    dict(arch="parallel", solver="csd")),
    "w8_shift0_last_dc0": (3, dict(hidden=9, inputs=3, outputs=4, weight_bits=8, input_bits=12, act_bits=4,
                                   output_bits=5, output_mode="last_step", shift=0),
                           dict(arch="parallel", solver="alkaid", solver_dc=0)),
    "folded_h13_p4_w3_u5": (5, dict(hidden=13, inputs=3, outputs=2, recurrent_bits=3, input_weight_bits=5,
                                    narrow=("U",), input_bits=6, act_bits=5, output_bits=3), dict(arch="folded", lanes=4)),
    "folded_h33_p8_relu_last": (6, dict(hidden=33, inputs=2, outputs=5, weight_bits=6, input_bits=9, act_bits=11,
                                        output_bits=7, activation="relu", output_mode="last_step"),
                                dict(arch="folded", lanes=8)),
    "folded_h1_p1_w1": (7, dict(hidden=1, inputs=2, outputs=1, weight_bits=1, input_bits=3, act_bits=3,
                                output_bits=2), dict(arch="folded", lanes=1)),
}
RANDOM_SEEDS = (101, 102, 103, 104)


def random_case(seed: int):
    """A random configuration: sizes, every bit width, activation, output mode, architecture."""
    rng = np.random.default_rng(seed)
    kw = dict(hidden=int(rng.choice([2, 3, 5, 8, 11, 17])), inputs=int(rng.integers(1, 6)),
              outputs=int(rng.integers(1, 5)), recurrent_bits=int(rng.integers(1, 9)),
              input_weight_bits=int(rng.integers(1, 9)), output_bits=int(rng.integers(1, 9)),
              input_bits=int(rng.integers(2, 17)), act_bits=int(rng.integers(2, 17)),
              activation=str(rng.choice(["modrelu", "relu"])), output_mode=str(rng.choice(["every_step", "last_step"])))
    kw["narrow"] = tuple(k for k, b in (("W", kw["recurrent_bits"]), ("U", kw["input_weight_bits"]))
                         if b > 1 and rng.random() < 0.3)
    arch = "folded" if rng.random() < 0.4 else "parallel"
    opts = dict(arch=arch) | (dict(lanes=int(rng.integers(1, kw["hidden"] + 1))) if arch == "folded" else {})
    return seed, kw, opts


CASES = FIXED | {f"random_{s}": random_case(s) for s in RANDOM_SEEDS}


def make_artifact(name: str):
    seed, kw, _ = CASES[name]
    return random_artifact(np.random.default_rng(seed), **kw)


def options(name: str) -> dict:
    return dict(CASES[name][2])
