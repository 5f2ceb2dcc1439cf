"""Trained run -> integer artifact: quantize weights, calibrate (or take the trained) hidden scale, pick requant constants.

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
    """max|x| and max|h| of the fake-quantized float model on calibration batches (the hidden
    state in float even for a hidden-state QAT model: this is the post-hoc alternative)."""
    model.eval()
    rng = np.random.default_rng(seed)
    xmax = hmax = 0.0
    dtype = model.W.dtype
    for _ in range(batches):
        x, _ = task.batch(batch_size, rng)
        x = x.to(dtype)
        _, hidden = model(x, return_hidden=True, hidden_quant=False)
        xmax = max(xmax, float(x.abs().max()))
        hmax = max(hmax, float(hidden.abs().max()))
    return {"x_absmax": xmax, "h_absmax": hmax, "batches": batches, "batch_size": batch_size, "seed": seed}


def _po2_up(s: float) -> float:
    m, e = math.frexp(s)
    return math.ldexp(1.0, e - 1 if m == 0.5 else e)


@torch.no_grad()
def export_model(model, task, act_bits: int | None = None, input_bits: int | None = None,
                 output_bits: int | None = None, calib: dict | None = None, provenance: dict | None = None,
                 weight_scale: str | None = None, spectral_scale: bool | None = None,
                 calibrate_hidden: bool = False) -> tuple[Artifact, dict]:
    """Integer artifact of a QORNN (weights exactly as its fake-quantized forward pass uses them).

    A model trained with hidden-state QAT (``act_bits``) is exported with its trained s_x and
    s_h, bit widths and scale options (giving others is refused, unless ``calibrate_hidden``);
    any other model gets the post-hoc calibration (docs/spec.md), with the weight scales of
    ``weight_scale`` / ``spectral_scale`` (default: as trained)."""
    from qornn.train.quantizers import WEIGHT_SCALES, check_bits, quantize

    if model.weight_bits is None:
        raise QornnError("model has full-precision weights; export needs --weight-bits (use a quantized run)")
    trained = model.act is not None and not calibrate_hidden
    if trained:
        for what, given, own in (("--act-bits", act_bits, model.act_bits), ("--input-bits", input_bits, model.input_bits),
                                 ("--weight-scale", weight_scale, model.weight_scale),
                                 ("--spectral-scale", spectral_scale, model.spectral_scale)):
            if given is not None and given != own:
                raise QornnError(f"{what} {given} differs from the hidden-state QAT training ({own}); export "
                                 "with the trained setting, or add --calibrate for post-hoc calibration")
    act_bits = act_bits or model.act_bits or 8
    input_bits = input_bits or (model.input_bits if model.act is not None else 8)
    check_bits(act_bits, "activation bits", 2, 16)
    check_bits(input_bits, "input bits", 2, 16)
    mode = weight_scale or model.weight_scale
    if mode not in WEIGHT_SCALES:
        raise QornnError(f"unknown weight scale {mode!r}; choose one of {', '.join(WEIGHT_SCALES)}")
    if mode == "lsq" and model.weight_scale != "lsq":
        raise QornnError("lsq weight scales are learned in training (qornn train --weight-scale lsq); "
                         "export this run with max or po2")
    spectral = model.spectral_scale if spectral_scale is None else spectral_scale
    ob = output_bits if output_bits is not None else (model.output_bits or 8)
    check_bits(ob, "output bits", 1, 8)
    model.eval()
    for name, p in model.named_parameters():
        if not torch.isfinite(p).all():
            raise QornnError(f"weight '{name}' holds NaN or inf; cannot export")
    if hasattr(model, "scales_ready") and not bool(model.scales_ready):
        model(task.batch(64, np.random.default_rng(2024))[0].to(model.W.dtype))  # untrained: initialise scales
    saved = model.weight_scale, model.spectral_scale
    model.weight_scale, model.spectral_scale = mode, spectral
    try:
        qw = model.quantized_weights()
    finally:
        model.weight_scale, model.spectral_scale = saved
    narrow = model.narrow_range
    if ob != model.output_bits:
        qw["V"] = quantize(model.V.detach(), ob, narrow, mode="po2" if mode == "po2" else "max")
    (W, s_w), (U, s_u), (V, s_v) = ((_int8(qw[k][1]), float(qw[k][2])) for k in ("W", "U", "V"))
    if trained:
        sc = model.scales()
        s_x, s_h = sc["input"], sc["hidden"]
        calib = None
        how = {"hidden": "learned (lsq)" if model.act.mode == "lsq" else "tracked (running max)",
               "input": "tracked (running max)"}
    else:
        calib = calib or calibrate(model, task)
        s_x = (calib["x_absmax"] or 1.0) / sym_max(input_bits)
        s_h = (calib["h_absmax"] or 1.0) / sym_max(act_bits)
        if mode == "po2":
            s_x, s_h = _po2_up(s_x), _po2_up(s_h)
        how = {"hidden": "calibrated", "input": "calibrated"}
    m_w, shift_w = requant_constant(s_w)
    m_u, shift_u = requant_constant((s_u * s_x) / s_h)
    b = np.zeros(model.hidden_size, dtype=np.int32)
    if model.b is not None:
        b = np.round(model.b.double().numpy() / s_h).clip(-B_LIMIT, B_LIMIT).astype(np.int32)
    c = np.round(model.c.double().numpy() / (s_v * s_h))
    if not np.all(np.abs(c) < INT64_LIMIT):
        raise QornnError("output bias c is too large for the output scale; cannot export")
    learned = mode == "lsq" or (trained and model.act.mode == "lsq")
    art = Artifact(
        W=W, U=U, V=V, b=b, c=c.astype(np.int64), activation=model.activation, output_mode=model.output_mode,
        recurrent_bits=model.recurrent_bits, input_weight_bits=model.input_weight_bits, output_bits=ob,
        input_bits=input_bits, act_bits=act_bits, m_w=m_w, shift_w=shift_w, m_u=m_u, shift_u=shift_u,
        input_scale=s_x, w_scale=s_w, u_scale=s_u, hidden_scale=s_h, v_scale=s_v,
        narrow=tuple(k for k, bits in (("W", model.recurrent_bits), ("U", model.input_weight_bits), ("V", ob))
                     if narrow and bits > 1),
        scale_mode="po2" if mode == "po2" else "lsq" if learned else "max",
        provenance=(provenance or {}) | {"task": task.config(), "method": model.method, "calibration": calib,
                                         "scales": {"weights": mode, "spectral": spectral} | how},
    ).validate()
    return art, footprint(art)


def _int8(codes: torch.Tensor) -> np.ndarray:
    return codes.detach().cpu().numpy().astype(np.int8)


def footprint(art: Artifact) -> dict:
    """Parameter memory of the integer core versus float32."""
    n, m, o = art.hidden_size, art.input_size, art.output_size
    wd = art.widths()
    bits = (n * n * art.recurrent_bits + n * m * art.input_weight_bits + o * n * art.output_bits
            + n * wd["b"] * (art.activation == "modrelu") + o * wd["c"])
    params = n * n + n * m + o * n + o + (n if art.activation == "modrelu" else 0)
    return {"parameters": params, "integer_bytes": math.ceil(bits / 8), "float32_bytes": 4 * params,
            "compression": round(4 * params / math.ceil(bits / 8), 2)}
