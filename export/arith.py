"""Which number types compute the spec's integers exactly: proofs from `Artifact.bounds()`.

The simulator (and anything else that wants BLAS speed) runs the integer recurrence of
docs/spec.md in floating point only where every value it forms is an integer (or an integer times
a power of two) that the type represents exactly. This module states each such condition once,
as a function of the artifact's bounds (Python ints, never a fixed-width type), so the choice can
be tested at its thresholds.

**The lemma.** A floating-point type with a p-bit significand represents every integer k with
``|k| <= 2^p`` exactly (p = 24 for float32, 53 for float64), and every ``k · 2^e`` likewise as long
as the exponent stays in range. IEEE addition and multiplication return the exactly rounded
result, so an operation whose exact result is such a number returns it unchanged. A dot product
of integer vectors, summed in *any* order, blocked or with fused multiply-adds (as BLAS does), only
ever forms products ``w_j · v_j`` and sums of a subset of them; each has magnitude at most
``sum_j |w_j| |v_j|``. So if that sum is below ``2^p`` the whole dot product is exact, whatever
the BLAS kernel does. The conditions below use ``< 2^p`` (one less than the lemma allows, and the
same convention as ``Artifact.float64_exact``).

**Where each bound comes from** (docs/spec.md, "Widths"):

* ``acc_w = n · w_max(W) · h_max`` bounds ``sum_j |W_ij| |h_j|``: the product ``W · h`` is exact in
  float32 when ``acc_w < 2^24``, in float64 when ``acc_w < 2^53``. The multiplier ``M'_W`` is left
  out of that product and applied afterwards (below), so the small codes keep the cheap type.
* ``acc_u = m · w_max(U) · x_max`` bounds ``U · x`` the same way.
* ``V · h`` is bounded by ``n · v_max · h_max`` (the ``out`` bound without ``max|c|``); ``c`` is
  added afterwards in int64.
* The requantization ``p = M'_W aW + M'_U aU + 2^(S-1)`` and everything after it (``z``,
  ``|z| + b``, the clamp, the sign, the product) is bounded by ``pre``, ``z`` and ``zb``. In
  float64 with the factor ``2^-S`` folded into the multipliers (a power-of-two scaling is exact),
  every value is ``k · 2^-S`` with ``|k| <= pre``; ``floor`` then gives the spec's rounding
  exactly. This needs ``max(bounds) < 2^53``: `Artifact.float64_exact`. Otherwise the work type
  is int64, where the artifact loader guarantees every bound is below 2^62.
* After the rounding, the activation forms only ``z``, ``|z|``, ``|z| + b``, the clamp (at most
  ``h_max``), ``sign(z)`` and their product, all integers bounded by ``zb = z + max|b|``: the
  activation runs in float32 when ``zb < 2^24`` (z is converted from the work type exactly,
  being such an integer), else in the work type.

A product computed in a float type is converted to the work type before the multiplier is
applied: the conversion of an exactly represented integer is exact in every direction used here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .artifact import FLOAT64_EXACT, Artifact

FLOAT32_EXACT = 2**24    # integers below this are exact in float32 (24-bit significand)


def exact_dtype(bound: int, float32: bool = True) -> type:
    """The cheapest type whose dot products are exact when every partial sum is at most `bound`
    in magnitude: float32 below 2^24, float64 below 2^53, else int64 (the caller guarantees
    int64 holds it: the artifact's bounds are below 2^62)."""
    bound = int(bound)
    if float32 and bound < FLOAT32_EXACT:
        return np.float32
    if bound < FLOAT64_EXACT:
        return np.float64
    return np.int64


def vh_bound(art: Artifact) -> int:
    """``n · v_max · h_max``: the largest ``|V · h|`` (the ``out`` bound without ``max|c|``)."""
    return art.hidden_size * art.code_max("V") * art.h_max


@dataclass(frozen=True)
class Plan:
    """The number type of each part of one step (see the module docstring for the proofs).

    `w`: the product ``W · h_{t-1}`` (also the type in which h is kept between steps);
    `u`: the product ``U · x_t`` (with float64 work it carries ``M'_U 2^-S`` and the rounding
    offset folded in); `v`: ``V · h_t``; `work`: the requantization ``p`` and its rounding;
    `act`: the activation, from ``z`` on."""

    w: type
    u: type
    v: type
    work: type
    act: type

    def describe(self) -> str:
        name = {np.float32: "float32", np.float64: "float64", np.int64: "int64"}
        return (f"W.h {name[self.w]}, U.x {name[self.u]}, V.h {name[self.v]}, requant {name[self.work]}, "
                f"activation {name[self.act]}")


def plan(art: Artifact, force_int64: bool = False) -> Plan:
    """The fastest exact plan for `art`; `force_int64` gives the all-int64 reference path."""
    if force_int64:
        return Plan(np.int64, np.int64, np.int64, np.int64, np.int64)
    b = art.bounds()
    work = np.float64 if art.float64_exact() else np.int64
    # With float64 work the U product carries M'_U 2^-S and 2^(S-1) 2^-S: its partial sums are
    # bounded by M'_U acc_u + half <= pre < 2^53 (float64_exact), so float64 is exact and float32
    # is not considered. With int64 work it is the bare product of codes.
    u = np.float64 if work is np.float64 else exact_dtype(b["acc_u"])
    act = np.float32 if b["zb"] < FLOAT32_EXACT else work     # zb >= z: bounds z and |z| + b
    return Plan(w=exact_dtype(b["acc_w"]), u=u, v=exact_dtype(vh_bound(art)), work=work, act=act)
