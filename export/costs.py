"""What an integer artifact costs: memory (raw and entropy-coded) and an energy estimate per step.

Footprint: raw bits of every tensor, its Shannon entropy and the average length of a Huffman
code built on its own code histogram (Deep Compression, Han et al. 2016: the codes of a
quantized net are far from uniform, so a Huffman-coded store is smaller than the raw one).

Energy: operation counts of one time step of docs/spec.md times per-operation energies at 45 nm
(Horowitz, "Computing's energy problem", ISSCC 2014): 8-bit add 0.03 pJ, 32-bit add 0.1 pJ,
8-bit multiply 0.2 pJ, 32-bit multiply 3.1 pJ, 32-bit float add 0.9 pJ, 32-bit float multiply
3.7 pJ, 32-bit SRAM read (8 kB) 5 pJ, DRAM read 640 pJ per 32 bits. Integer adds are interpolated
linearly in the operand width between the 8- and 32-bit figures; integer multiplies scale with
the product of the operand widths (8x8 and 32x32 both give ~0.0031 pJ per partial-product bit).
This is an *estimate* from counts, said so wherever it is shown; measured resource figures of a
hardware backend, where known, are reported beside it, never replaced by it.
"""

from __future__ import annotations

import heapq
import math

import numpy as np

from .artifact import Artifact

# Horowitz 2014, 45 nm, pJ per operation
ADD_8, ADD_32 = 0.03, 0.1
MUL_8, MUL_32 = 0.2, 3.1
FADD_32, FMUL_32 = 0.9, 3.7
SRAM_READ_32, DRAM_READ_32 = 5.0, 640.0
HOROWITZ = ("M. Horowitz, 'Computing's energy problem (and what we can do about it)', ISSCC 2014, "
            "45 nm figures")


def add_pj(bits: int) -> float:
    """Energy of one integer add of `bits`-bit operands (linear in the width)."""
    return ADD_8 + (ADD_32 - ADD_8) * (bits - 8) / 24 if bits >= 8 else ADD_8 * bits / 8


def mul_pj(a_bits: int, b_bits: int) -> float:
    """Energy of one integer multiply: proportional to the partial products a_bits x b_bits."""
    per = (MUL_8 / 64 + MUL_32 / 1024) / 2
    return per * a_bits * b_bits


# -- entropy and Huffman ----------------------------------------------------------------------
def entropy_bits(codes: np.ndarray) -> float:
    """Shannon entropy (bits per element) of the empirical distribution of `codes`."""
    _, counts = np.unique(np.asarray(codes).ravel(), return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def huffman_bits(codes: np.ndarray) -> float:
    """Average length (bits per element) of a Huffman code built on the codes' own histogram
    (a single symbol still costs 1 bit per element: a code must have a length)."""
    _, counts = np.unique(np.asarray(codes).ravel(), return_counts=True)
    total = int(counts.sum())
    if len(counts) == 1:
        return 1.0
    heap = [(int(c), i, 0) for i, c in enumerate(counts)]   # (weight, tiebreak, sum of weight*depth)
    heapq.heapify(heap)
    nxt = len(heap)
    while len(heap) > 1:
        w1, _, c1 = heapq.heappop(heap)
        w2, _, c2 = heapq.heappop(heap)
        heapq.heappush(heap, (w1 + w2, nxt, c1 + c2 + w1 + w2))   # every leaf below goes one deeper
        nxt += 1
    return heap[0][2] / total


def footprint(art: Artifact) -> dict:
    """Per-tensor and total memory of the integer core: raw bits, entropy and Huffman-coded bits,
    and the float32 size of the same parameters."""
    wd = art.widths()
    tensors = {"W": (art.W, art.recurrent_bits), "U": (art.U, art.input_weight_bits), "V": (art.V, art.output_bits),
               "c": (art.c, wd["c"])}
    if art.activation == "modrelu":
        tensors["b"] = (art.b, wd["b"])
    rows = {}
    for name, (t, bits) in tensors.items():
        size = int(t.size)
        rows[name] = {"elements": size, "bits_per_element": bits, "raw_bits": size * bits,
                      "entropy_bits_per_element": round(entropy_bits(t), 4),
                      "huffman_bits_per_element": round(huffman_bits(t), 4),
                      "huffman_bits": math.ceil(huffman_bits(t) * size)}
    params = sum(r["elements"] for r in rows.values())
    raw = sum(r["raw_bits"] for r in rows.values())
    huff = sum(r["huffman_bits"] for r in rows.values())
    return {"tensors": rows, "parameters": params, "raw_bits": raw, "integer_bytes": math.ceil(raw / 8),
            "huffman_bytes": math.ceil(huff / 8), "float32_bytes": 4 * params,
            "compression": round(4 * params / math.ceil(raw / 8), 2)}


# -- energy -----------------------------------------------------------------------------------
def step_operations(art: Artifact) -> dict:
    """Operation counts of one time step (docs/spec.md 'One step') with their operand widths."""
    n, m, o = art.hidden_size, art.input_size, art.output_size
    wd = art.widths()
    kx, kh = art.input_bits, art.act_bits
    ops = {
        "W.h multiplies": (n * n, "mul", (art.recurrent_bits, kh)),
        "W.h adds": (n * (n - 1), "add", (wd["acc_w"],)),
        "U.x multiplies": (n * m, "mul", (art.input_weight_bits, kx)),
        "U.x adds": (n * (m - 1), "add", (wd["acc_u"],)),
        "requant multiplies": (n * ((art.m_w > 1) + (art.m_u > 1)), "mul", (16, max(wd["acc_w"], wd["acc_u"]))),
        "requant adds": (2 * n, "add", (wd["pre"],)),
        "activation adds": (2 * n if art.activation == "modrelu" else n, "add", (wd["zb"],)),
        "V.h multiplies": (o * n, "mul", (art.output_bits, kh)),
        "V.h adds": (o * n, "add", (wd["out"],)),
    }
    return ops


def energy_per_step(art: Artifact, weights_in: str = "sram") -> dict:
    """Estimated energy (pJ) of one time step, integer core versus the same network in float32.

    weights_in: 'sram' (every weight read once per step from on-chip SRAM, 32 bits per read,
    packed), 'logic' (weights are constants in the logic: no reads, as in qornn's parallel RTL
    core) or 'dram'."""
    read32 = {"sram": SRAM_READ_32, "dram": DRAM_READ_32, "logic": 0.0}[weights_in]
    rows, total = {}, 0.0
    for name, (count, kind, widths) in step_operations(art).items():
        e = count * (mul_pj(*widths) if kind == "mul" else add_pj(*widths))
        rows[name] = round(e, 3)
        total += e
    weight_bits = (art.hidden_size ** 2 * art.recurrent_bits + art.hidden_size * art.input_size * art.input_weight_bits
                   + art.output_size * art.hidden_size * art.output_bits)
    rows["weight reads"] = round(math.ceil(weight_bits / 32) * read32, 3)
    total += rows["weight reads"]
    n, m, o = art.hidden_size, art.input_size, art.output_size
    macs = n * n + n * m + o * n
    float_pj = macs * (FMUL_32 + FADD_32) + 2 * n * FADD_32 + (macs * read32)
    return {"operations_pj": rows, "integer_pj": round(total, 2), "float32_pj": round(float_pj, 2),
            "ratio": round(float_pj / total, 1) if total else None, "weights_in": weights_in, "source": HOROWITZ}
