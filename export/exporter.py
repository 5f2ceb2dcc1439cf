"""Trained run -> integer artifact: quantize weights, calibrate the hidden state, pick requant constants.

This is the one place where floating point decides integers (docs/spec.md, "How the integers
are chosen"); after it, every executor works on integers only.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from qornn.errors import QornnError

from .artifact import B_LIMIT, INT64_LIMIT, Artifact, requant_constant, sym_max


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


def _codes(w: torch.Tensor, bits: int, narrow: bool = False) -> tuple[np.ndarray, float]:
    from qornn.train.quantizers import quantize_int

    codes, scale = quantize_int(w.detach(), bits, narrow)  # same dtype as the forward pass: same codes
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
    ob = output_bits if output_bits is not None else (model.output_bits or 8)
    check_bits(ob, "output bits", 1, 8)
    model.eval()
    for name, p in model.named_parameters():
        if not torch.isfinite(p).all():
            raise QornnError(f"weight '{name}' holds NaN or inf; cannot export")
    calib = calib or calibrate(model, task)
    narrow = model.narrow_range
    W, s_w = _codes(model.recurrent_float(), model.recurrent_bits, narrow)
    U, s_u = _codes(model.U, model.input_weight_bits, narrow)
    V, s_v = _codes(model.V, ob, narrow)
    s_x = (calib["x_absmax"] or 1.0) / sym_max(input_bits)
    s_h = (calib["h_absmax"] or 1.0) / sym_max(act_bits)
    m_w, shift_w = requant_constant(s_w)
    m_u, shift_u = requant_constant((s_u * s_x) / s_h)
    b = np.zeros(model.hidden_size, dtype=np.int32)
    if model.b is not None:
        b = np.round(model.b.double().numpy() / s_h).clip(-B_LIMIT, B_LIMIT).astype(np.int32)
    c = np.round(model.c.double().numpy() / (s_v * s_h))
    if not np.all(np.abs(c) < INT64_LIMIT):
        raise QornnError("output bias c is too large for the output scale; cannot export")
    art = Artifact(
        W=W, U=U, V=V, b=b, c=c.astype(np.int64), activation=model.activation, output_mode=model.output_mode,
        recurrent_bits=model.recurrent_bits, input_weight_bits=model.input_weight_bits, output_bits=ob,
        input_bits=input_bits, act_bits=act_bits, m_w=m_w, shift_w=shift_w, m_u=m_u, shift_u=shift_u,
        input_scale=s_x, w_scale=s_w, u_scale=s_u, hidden_scale=s_h, v_scale=s_v,
        narrow=tuple(k for k, bits in (("W", model.recurrent_bits), ("U", model.input_weight_bits), ("V", ob))
                     if narrow and bits > 1),
        provenance=(provenance or {}) | {"task": task.config(), "method": model.method, "calibration": calib},
    ).validate()
    return art, footprint(art)


def footprint(art: Artifact) -> dict:
    """Parameter memory of the integer core versus float32."""
    n, m, o = art.hidden_size, art.input_size, art.output_size
    wd = art.widths()
    bits = (n * n * art.recurrent_bits + n * m * art.input_weight_bits + o * n * art.output_bits
            + n * wd["b"] * (art.activation == "modrelu") + o * wd["c"])
    params = n * n + n * m + o * n + o + (n if art.activation == "modrelu" else 0)
    return {"parameters": params, "integer_bytes": math.ceil(bits / 8), "float32_bytes": 4 * params,
            "compression": round(4 * params / math.ceil(bits / 8), 2)}
