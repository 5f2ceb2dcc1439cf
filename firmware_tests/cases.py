"""The firmware configurations shared by the tests (see conftest.py for how they are built).

Fifteen projects span the configurations: every weight width 1..8; mixed widths (ternary
narrow-range W with 3-bit U and a 6-bit hidden state); activation widths 2..16 and
input widths 2..16 at both ends; hidden 1 and 37; modReLU and ReLU; every_step and last_step;
Latency and Resource strategies with reuse factor 1 and > 1 (both resource kernels: rf <= n_in
and rf > n_in); Vivado and Vitis; io_stream and io_parallel; shift 0 and 16; an output bias near
2^49; the U accumulator just below and just above 2^31 (C++ int / long long sums); 2-bit weights
holding -2; the all-defaults project (max length 1024); and one project of a perturbed artifact. Artifacts are seeded, so their cache keys are stable across runs.
"""

from __future__ import annotations

import numpy as np

from qornn.testing import random_artifact

# name: (seed, random_artifact keywords, write_project options)
CASES = {
    "tiny": (1, dict(hidden=1, inputs=1, outputs=1, weight_bits=1, input_bits=2, act_bits=3, output_bits=1,
                     activation="modrelu", output_mode="every_step"),
             dict(backend="Vitis", io_type="io_stream", max_length=64)),
    "h37_last_w8_a16": (2, dict(hidden=37, inputs=5, outputs=3, weight_bits=8, input_bits=16, act_bits=16,
                                output_bits=8, activation="modrelu", output_mode="last_step"),
                        dict(backend="Vivado", io_type="io_parallel", max_length=256)),
    "defaults_h37_relu": (3, dict(hidden=37, inputs=3, outputs=2, weight_bits=3, input_bits=8, act_bits=8,
                                  output_bits=4, activation="relu", output_mode="every_step"),
                          dict()),  # all defaults: Vitis, io_stream, Latency, reuse 1, max length 1024
    "resource_r8": (4, dict(hidden=16, inputs=4, outputs=4, weight_bits=4, input_bits=6, act_bits=6,
                            output_bits=6, activation="modrelu", output_mode="every_step"),
                    dict(backend="Vitis", io_type="io_stream", strategy="Resource", reuse_factor=8, max_length=128)),
    "w2_resource_r4": (5, dict(hidden=16, inputs=4, outputs=4, weight_bits=2, input_bits=10, act_bits=12,
                               output_bits=2, activation="relu", output_mode="last_step"),
                       dict(backend="Vivado", io_type="io_parallel", strategy="Resource", reuse_factor=4,
                            max_length=128)),
    "latency_r2": (6, dict(hidden=12, inputs=4, outputs=2, weight_bits=5, input_bits=4, act_bits=10,
                           output_bits=3, activation="modrelu", output_mode="every_step"),
                   dict(backend="Vivado", io_type="io_stream", reuse_factor=2, max_length=96)),
    "shift0": (7, dict(hidden=8, inputs=2, outputs=2, weight_bits=6, input_bits=12, act_bits=4, output_bits=5,
                       activation="modrelu", output_mode="last_step", shift=0),
               dict(backend="Vitis", io_type="io_parallel", max_length=64)),
    "w7_relu_shift16": (8, dict(hidden=10, inputs=3, outputs=3, weight_bits=7, input_bits=14, act_bits=14,
                                output_bits=7, activation="relu", output_mode="every_step", shift=16),
                        dict(backend="Vitis", io_type="io_parallel", max_length=64)),
    "big_c": (9, dict(hidden=6, inputs=2, outputs=2, weight_bits=4, input_bits=8, act_bits=9, output_bits=8,
                      activation="modrelu", output_mode="every_step"),
              dict(backend="Vivado", io_type="io_stream", max_length=48)),
    "h37_w1_a2_resource_r37": (10, dict(hidden=37, inputs=1, outputs=1, weight_bits=1, input_bits=5, act_bits=2,
                                        output_bits=1, activation="modrelu", output_mode="last_step"),
                               dict(backend="Vitis", io_type="io_parallel", strategy="Resource", reuse_factor=37,
                                    max_length=200)),
    "w8_a15_short": (11, dict(hidden=9, inputs=3, outputs=5, weight_bits=8, input_bits=3, act_bits=15,
                              output_bits=8, activation="modrelu", output_mode="every_step"),
                     dict(backend="Vitis", io_type="io_stream", strategy="Resource", max_length=16)),
    # The native accumulator of DenseLatencyNative at its boundary: acc_u = m * 128 * 32767 is
    # below 2^31 for m = 512 (width 32: C++ int) and above it for m = 513 (width 33: long long);
    # unit 0's U row is all -128, so the constant full-scale run reaches the bound itself.
    "acc_u_w32_int": (13, dict(hidden=3, inputs=512, outputs=2, recurrent_bits=4, input_weight_bits=8,
                               input_bits=16, act_bits=8, output_bits=4, activation="modrelu",
                               output_mode="every_step"),
                      dict(backend="Vitis", io_type="io_stream", max_length=64)),
    "acc_u_w33_longlong": (14, dict(hidden=3, inputs=513, outputs=2, recurrent_bits=4, input_weight_bits=8,
                                    input_bits=16, act_bits=8, output_bits=4, activation="relu",
                                    output_mode="last_step"),
                           dict(backend="Vivado", io_type="io_parallel", max_length=64)),
    "ternary_w_u3_h6": (12, dict(hidden=13, inputs=3, outputs=2, recurrent_bits=2, input_weight_bits=3,
                                 narrow=("W",), input_bits=8, act_bits=6, output_bits=5, activation="modrelu",
                                 output_mode="every_step"),
                        dict(backend="Vitis", io_type="io_stream", max_length=80)),
}
PERTURBED = "perturbed_latency_r2"   # the artifact of "latency_r2" with one recurrent weight changed by 1


def make_artifact(name: str):
    if name == PERTURBED:
        art = make_artifact("latency_r2")
        W = art.W.copy()
        W[3, 5] = W[3, 5] + 1 if W[3, 5] < 15 else W[3, 5] - 1
        art.W = W
        return art.validate()
    seed, kw, _ = CASES[name]
    art = random_artifact(np.random.default_rng(seed), **kw)
    if name.startswith("acc_u_w3"):
        art.U = art.U.copy()
        art.U[0, :] = -128
    if name == "big_c":  # output bias near 2^49: exact decimal weights and a wide output type
        art.c = np.array([(1 << 49) - 12345, -(1 << 49) + 777], dtype=np.int64)
    return art.validate()


def options(name: str) -> dict:
    return dict(CASES["latency_r2"][2]) if name == PERTURBED else dict(CASES[name][2])


ALL = list(CASES) + [PERTURBED]

COMPARED = {"values": 0, "sequences": 0, "steps": 0}   # filled by the tests, printed by conftest


def compare(y, want, x, lengths=None) -> bool:
    """np.array_equal on int64 codes, counted for the session summary."""
    COMPARED["values"] += int(want.size)
    COMPARED["sequences"] += int(x.shape[0])
    COMPARED["steps"] += int(x.shape[0] * x.shape[1]) if lengths is None else int(sum(lengths))
    return y.dtype == np.int64 and y.shape == want.shape and np.array_equal(y, want)

