"""Random artifacts and boundary-seeking inputs, for tests of every executor (numpy only)."""

from __future__ import annotations

import math

import numpy as np

from qornn.export.artifact import Artifact, requant_constant, sym_max, weight_range


def random_artifact(rng: np.random.Generator, hidden: int = 16, inputs: int = 5, outputs: int = 3,
                    weight_bits: int = 4, input_bits: int = 8, act_bits: int = 8, output_bits: int = 8,
                    activation: str = "modrelu", output_mode: str = "every_step",
                    shift: int | None = None, recurrent_bits: int | None = None,
                    input_weight_bits: int | None = None, narrow: tuple = (),
                    m_w: int | None = None, m_u: int | None = None, shift_u: int | None = None) -> Artifact:
    """An artifact with random codes and requant constants that keep the recurrence lively.

    `weight_bits` sets W and U unless `recurrent_bits` / `input_weight_bits` override it. The
    multipliers are drawn (or given) for the shifts `shift` (W; also U unless `shift_u`) so that
    typical pre-activations land
    near h_max, which drives many units into saturation; the bias spans several hidden codes.
    The scales are powers of two times the multipliers, so the spec's derivation of the
    requant constants from the scales gives back exactly M / 2^S (in lowest terms)."""
    kw = recurrent_bits or weight_bits
    ku = input_weight_bits or weight_bits

    def codes(name, bits, shape):
        lo, hi = weight_range(bits, name in narrow)
        if bits == 1:
            return rng.choice([-1, 1], size=shape).astype(np.int8)
        return rng.integers(lo, hi + 1, size=shape).astype(np.int8)

    hmax = sym_max(act_bits)
    S = int(rng.integers(4, 17)) if shift is None else shift
    S_u = S if shift_u is None else shift_u
    wmax = -weight_range(kw, "W" in narrow)[0]
    umax = -weight_range(ku, "U" in narrow)[0]
    # |aW| ~ sqrt(n) * wmax * hmax / 2 typically; aim M_W * aW / 2^S ~ hmax.
    if m_w is None:
        m_w = int((1 << S) * rng.uniform(0.5, 3.0) / (np.sqrt(hidden) * wmax))
    if m_u is None:
        m_u = int((1 << S_u) * rng.uniform(0.5, 3.0) * hmax / (np.sqrt(inputs) * umax * sym_max(input_bits)))
    m_w, m_u = max(1, m_w), max(1, m_u)
    while m_w >= 2**16 and S > 0:      # a 16-bit multiplier: give up shift instead of range
        m_w, S = (m_w + 1) // 2, S - 1
    while m_u >= 2**16 and S_u > 0:
        m_u, S_u = (m_u + 1) // 2, S_u - 1
    m_w, m_u = min(m_w, 2**16 - 1), min(m_u, 2**16 - 1)
    s_x, s_h = math.ldexp(1.0, -(input_bits - 1)), math.ldexp(1.0, -(act_bits - 1))
    w_scale = math.ldexp(float(m_w), -S)
    u_scale = math.ldexp(float(m_u), -S_u) * s_h / s_x
    (M_W, S_W), (M_U, S_U) = requant_constant(w_scale), requant_constant((u_scale * s_x) / s_h)
    b = (rng.integers(-hmax // 2 - 1, hmax // 4 + 2, size=hidden) if activation == "modrelu"
         else np.zeros(hidden)).astype(np.int32)
    return Artifact(
        W=codes("W", kw, (hidden, hidden)), U=codes("U", ku, (hidden, inputs)),
        V=codes("V", output_bits, (outputs, hidden)), b=b,
        c=rng.integers(-1000, 1000, size=outputs).astype(np.int64),
        activation=activation, output_mode=output_mode, recurrent_bits=kw, input_weight_bits=ku,
        output_bits=output_bits, input_bits=input_bits, act_bits=act_bits,
        m_w=M_W, shift_w=S_W, m_u=M_U, shift_u=S_U, narrow=tuple(narrow),
        input_scale=s_x, w_scale=w_scale, u_scale=u_scale, hidden_scale=s_h, v_scale=0.125,
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


def with_requant(art: Artifact, **constants) -> Artifact:
    """A copy of `art` with other requant constants (m_w, shift_w, m_u, shift_u), its scales
    moved so that the spec's derivation gives exactly those constants (they must be in lowest
    terms: M odd, or S = 0)."""
    import dataclasses

    c = {k: getattr(art, k) for k in ("m_w", "shift_w", "m_u", "shift_u")} | constants
    w_scale = math.ldexp(float(c["m_w"]), -c["shift_w"])
    u_scale = math.ldexp(float(c["m_u"]), -c["shift_u"]) * art.hidden_scale / art.input_scale
    out = dataclasses.replace(art, w_scale=w_scale, u_scale=u_scale, **c)
    if out.ratios[1] != math.ldexp(float(c["m_u"]), -c["shift_u"]):
        raise ValueError("with_requant needs power-of-two input and hidden scales")
    return out.validate()
