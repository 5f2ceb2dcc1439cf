"""Trained run -> integer artifact: quantize weights, calibrate the hidden state, pick requant constants.

This is the one place where floating point decides integers (docs/spec.md, "How the integers
are chosen"); after it, every executor works on integers only.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from qornn.errors import QornnError

from .artifact import Artifact, sym_max

REQUANT_BITS = 16  # multipliers M_W, M_U < 2^16


def requant_constants(r_w: float, r_u: float) -> tuple[int, int, int]:
    """Largest shift S with max(round(r 2^S)) < 2^16; returns (M_W, M_U, S)."""
    r_max = max(r_w, r_u)
    if not (math.isfinite(r_max) and r_max > 0):
        raise QornnError(f"cannot requantize: scale ratios {r_w}, {r_u} are not finite and positive")
    S = min(62, math.floor(math.log2((2**REQUANT_BITS - 0.5) / r_max)))
    while S >= 0 and max(round(r_w * 2**S), round(r_u * 2**S)) >= 2**REQUANT_BITS:
        S -= 1
    if S < 0:
        raise QornnError(f"scale ratio {r_max:.3g} too large for an integer requantization; "
                         "raise --act-bits or check the calibration data")
    return round(r_w * 2**S), round(r_u * 2**S), S


@torch.no_grad()
def calibrate(model, task, batches: int = 4, batch_size: int = 64, seed: int = 2024) -> dict:
    """max|x| and max|h| of the fake-quantized float model on calibration batches."""
    model.eval()
    rng = np.random.default_rng(seed)
    xmax = hmax = 0.0
    for _ in range(batches):
        x, _ = task.batch(batch_size, rng)
        _, hidden = model(x, return_hidden=True)
        xmax = max(xmax, float(x.abs().max()))
        hmax = max(hmax, float(hidden.abs().max()))
    return {"x_absmax": xmax, "h_absmax": hmax, "batches": batches, "batch_size": batch_size, "seed": seed}


def _codes(w: torch.Tensor, bits: int) -> tuple[np.ndarray, float]:
    from qornn.train.quantizers import quantize_int

    codes, scale = quantize_int(w.detach(), bits)  # same dtype as the forward pass: same codes
    return codes.numpy().astype(np.int8), float(scale)


@torch.no_grad()
def export_model(model, task, act_bits: int, input_bits: int = 8, output_bits: int | None = None,
                 calib: dict | None = None, provenance: dict | None = None) -> tuple[Artifact, dict]:
    """Integer artifact of a QORNN (weights exactly as its fake-quantized forward pass uses them)."""
    from qornn.train.quantizers import check_bits

    check_bits(act_bits, "activation bits", 2, 16)
    check_bits(input_bits, "input bits", 2, 16)
    if model.weight_bits is None:
        raise QornnError("model has full-precision weights; export needs --weight-bits (use a quantized run)")
    ob = output_bits or model.output_bits or 8
    check_bits(ob, "output bits", 1, 8)
    model.eval()
    for name, p in model.named_parameters():
        if not torch.isfinite(p).all():
            raise QornnError(f"weight '{name}' holds NaN or inf; cannot export")
    calib = calib or calibrate(model, task)
    W, s_w = _codes(model.recurrent_float(), model.weight_bits)
    U, s_u = _codes(model.U, model.weight_bits)
    V, s_v = _codes(model.V, ob)
    s_x = (calib["x_absmax"] or 1.0) / sym_max(input_bits)
    s_h = (calib["h_absmax"] or 1.0) / sym_max(act_bits)
    m_w, m_u, S = requant_constants(s_w, s_u * s_x / s_h)
    b = np.zeros(model.hidden_size, dtype=np.int32)
    if model.b is not None:
        b = np.round(model.b.double().numpy() / s_h).clip(-(2**31 - 1), 2**31 - 1).astype(np.int32)
    c = np.round(model.c.double().numpy() / (s_v * s_h)).astype(np.int64)
    art = Artifact(
        W=W, U=U, V=V, b=b, c=c, activation=model.activation, output_mode=model.output_mode,
        weight_bits=model.weight_bits, input_bits=input_bits, act_bits=act_bits, output_bits=ob,
        m_w=m_w, m_u=m_u, shift=S, input_scale=s_x, w_scale=s_w, u_scale=s_u, hidden_scale=s_h, v_scale=s_v,
        provenance=(provenance or {}) | {"task": task.config(), "method": model.method, "calibration": calib},
    ).validate()
    return art, footprint(art)


def footprint(art: Artifact) -> dict:
    """Parameter memory of the integer core versus float32."""
    n, m, o = art.hidden_size, art.input_size, art.output_size
    wb, ob = art.weight_bits, art.output_bits
    bits = (n * n + n * m) * wb + o * n * ob + n * art.widths()["b"] * (art.activation == "modrelu") + o * art.widths()["c"]
    params = n * n + n * m + o * n + o + (n if art.activation == "modrelu" else 0)
    return {"parameters": params, "integer_bytes": math.ceil(bits / 8), "float32_bytes": 4 * params,
            "compression": round(4 * params / math.ceil(bits / 8), 2)}
