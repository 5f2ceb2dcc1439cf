"""Random artifacts and boundary-seeking inputs, for tests of every executor (numpy only)."""

from __future__ import annotations

import numpy as np

from qornn.export.artifact import Artifact, sym_max, weight_range


def random_artifact(rng: np.random.Generator, hidden: int = 16, inputs: int = 5, outputs: int = 3,
                    weight_bits: int = 4, input_bits: int = 8, act_bits: int = 8, output_bits: int = 8,
                    activation: str = "modrelu", output_mode: str = "every_step",
                    shift: int | None = None) -> Artifact:
    """An artifact with random codes and requant constants that keep the recurrence lively.

    The multipliers are drawn so that typical pre-activations land near h_max, which drives
    many units into saturation; the bias spans several hidden codes."""
    def codes(bits, shape):
        lo, hi = weight_range(bits)
        if bits == 1:
            return rng.choice([-1, 1], size=shape).astype(np.int8)
        return rng.integers(lo, hi + 1, size=shape).astype(np.int8)

    hmax = sym_max(act_bits)
    S = int(rng.integers(4, 17)) if shift is None else shift
    wmax = max(abs(v) for v in weight_range(weight_bits))
    # |aW| ~ sqrt(n) * wmax * hmax / 2 typically; aim M_W * aW / 2^S ~ hmax.
    m_w = max(1, int((1 << S) * rng.uniform(0.5, 3.0) / (np.sqrt(hidden) * wmax)))
    m_u = max(1, int((1 << S) * rng.uniform(0.5, 3.0) * hmax / (np.sqrt(inputs) * wmax * sym_max(input_bits))))
    b = (rng.integers(-hmax // 2 - 1, hmax // 4 + 2, size=hidden) if activation == "modrelu"
         else np.zeros(hidden)).astype(np.int32)
    return Artifact(
        W=codes(weight_bits, (hidden, hidden)), U=codes(weight_bits, (hidden, inputs)),
        V=codes(output_bits, (outputs, hidden)), b=b,
        c=rng.integers(-1000, 1000, size=outputs).astype(np.int64),
        activation=activation, output_mode=output_mode, weight_bits=weight_bits, input_bits=input_bits,
        act_bits=act_bits, output_bits=output_bits, m_w=m_w, m_u=m_u, shift=S,
        input_scale=1.0 / sym_max(input_bits), w_scale=0.1, u_scale=0.1, hidden_scale=1.0 / hmax, v_scale=0.1,
        provenance={"source": "qornn.testing.random_artifact"},
    ).validate()


def boundary_inputs(art: Artifact, rng: np.random.Generator, batch: int, length: int) -> np.ndarray:
    """Input codes mixing uniform noise, full-scale +/-x_max runs and zeros: drives saturation."""
    xm = art.x_max
    x = rng.integers(-xm, xm + 1, size=(batch, length, art.input_size))
    kind = rng.integers(0, 4, size=(batch, length, 1))
    x = np.where(kind == 1, xm, x)
    x = np.where(kind == 2, -xm, x)
    x = np.where(kind == 3, 0, x)
    return x.astype(np.int64)
