"""Signal-to-quantization-noise ratios of an export, and the hidden width that reaches a target.

SQNR = 10 log10(sum x^2 / sum (x - q(x))^2) in dB (Lin, Talathi & Annapureddy 2016 allocate
fixed-point widths by it; every bit adds ~6 dB for a uniform quantizer). For a weight tensor x is
the trained float matrix and q(x) its codes x scale. For the hidden state x is the trajectory of
the fake-quantized float model and q(x) the integer simulator's hidden codes x s_h on the same
calibration sequences: it measures the whole integer recurrence (requant rounding, saturation,
and how the errors carry along the sequence), not one rounding in isolation.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from qornn.errors import QornnError

from .artifact import Artifact


def sqnr_db(x: np.ndarray, xq: np.ndarray) -> float:
    """10 log10(signal / noise) in dB; inf when exact, -inf when the signal is zero."""
    x, xq = np.asarray(x, dtype=np.float64), np.asarray(xq, dtype=np.float64)
    sig, noise = float((x * x).sum()), float(((x - xq) ** 2).sum())
    if noise == 0:
        return math.inf
    if sig == 0:
        return -math.inf
    return 10 * math.log10(sig / noise)


@torch.no_grad()
def weight_sqnr(model, art: Artifact) -> dict[str, float]:
    """SQNR of W, U, V: the float weights the method trains against the exported codes x scale."""
    ref = {"W": model.recurrent_float(), "U": model.U, "V": model.V}
    scales = {"W": art.w_scale, "U": art.u_scale, "V": art.v_scale}
    return {k: round(sqnr_db(ref[k].detach().double().numpy(), getattr(art, k).astype(np.float64) * scales[k]), 2)
            for k in ref}


@torch.no_grad()
def hidden_sqnr(model, task, art: Artifact, batches: int = 4, batch_size: int = 64, seed: int = 2024) -> float:
    """SQNR of the integer hidden trajectory against the float hidden state of the model with its
    quantized weights (calibration data); for a hidden-state QAT model too, the float trajectory."""
    from .simulator import simulate

    model.eval()
    rng = np.random.default_rng(seed)
    sig = noise = 0.0
    for _ in range(batches):
        x, _ = task.batch(batch_size, rng)
        _, h = model(x, return_hidden=True, hidden_quant=False)  # quantized weights, float hidden state
        h = h.double().numpy()
        hq = simulate(art, x.numpy().astype(np.float64)).hidden * art.hidden_scale
        sig += float((h * h).sum())
        noise += float(((h - hq) ** 2).sum())
    if noise == 0:
        return math.inf
    return round(10 * math.log10(sig / noise), 2) if sig > 0 else -math.inf


def smallest_act_bits(model, task, target_db: float, export, lo: int = 2, hi: int = 16):
    """The narrowest hidden width whose hidden-state SQNR reaches `target_db`.

    `export(act_bits)` returns an Artifact. Widths are tried from `lo` up (SQNR grows with the
    width, but not strictly in a recurrent net, so no bisection). Returns (bits, artifact, sqnr)."""
    if not (isinstance(target_db, (int, float)) and math.isfinite(target_db)):
        raise QornnError(f"--target-sqnr must be a finite number of dB, got {target_db!r}")
    best = None
    for bits in range(lo, hi + 1):
        try:
            art = export(bits)
        except QornnError:
            continue   # e.g. a requant ratio out of range at this width
        s = hidden_sqnr(model, task, art)
        best = (bits, art, s)
        if s >= target_db:
            return best
    if best is None:
        raise QornnError("no hidden-state width from 2 to 16 bits could be exported")
    raise QornnError(f"no hidden-state width reaches {target_db:g} dB (16 bits give {best[2]:.1f} dB); "
                     "lower --target-sqnr")
