"""The simulator's number types (qornn.export.arith) at every threshold of their exactness proofs.

Each condition is tested just below, at (where an artifact can sit there: otherwise on the pure
function) and just above its threshold: the plan must pick the cheap type exactly where the proof
allows it, the simulator must then equal the Python-int reference, and the artifacts are built
so that the run really meets the bound (the reference reports the largest magnitudes it formed).
Forcing the cheap type past its threshold gives wrong integers: the fallback is needed.
"""

import dataclasses

import numpy as np
import pytest

from qornn.export.arith import FLOAT32_EXACT, Plan, exact_dtype, plan, vh_bound
from qornn.export.artifact import FLOAT64_EXACT, Artifact
from qornn.export.simulator import simulate
from qornn.testing import random_artifact, with_requant
from test_simulator import reference

F32, F64, I64 = np.float32, np.float64, np.int64


def test_exact_dtype_thresholds():
    assert exact_dtype(0) is F32
    assert exact_dtype(FLOAT32_EXACT - 1) is F32
    assert exact_dtype(FLOAT32_EXACT) is F64
    assert exact_dtype(FLOAT32_EXACT + 1) is F64
    assert exact_dtype(FLOAT64_EXACT - 1) is F64
    assert exact_dtype(FLOAT64_EXACT) is I64
    assert exact_dtype(FLOAT64_EXACT + 1) is I64
    assert exact_dtype(5, float32=False) is F64
    assert exact_dtype(2**70) is I64           # Python ints: no wrap in the comparison


def test_float32_lemma_is_tight():
    """The premise: float32 sums integer products exactly while the total is below 2^24, and not
    beyond (an odd sum above 2^24 has no float32)."""
    h = np.full(4, 32767, dtype=F32)
    w = np.full(4, -128, dtype=F32)
    assert int(w @ h) == -4 * 128 * 32767 == -(FLOAT32_EXACT - 512)
    h5, w5 = np.full(5, 32767, dtype=F32), np.array([-128] * 4 + [-127], dtype=F32)
    exact = -(4 * 128 + 127) * 32767
    assert abs(exact) > FLOAT32_EXACT and exact % 2
    assert int(w5 @ h5) != exact
    assert int(w5.astype(F64) @ h5.astype(F64)) == exact


class _Bounds(Artifact):
    """An artifact whose bounds are given, to put `plan` exactly at a threshold that no real
    artifact of a reasonable size sits on (acc_w = 2^24 would need n >= 2^17)."""

    def bounds(self):
        return dict(self.provenance["bounds"])


def _with_bounds(**given):
    art = random_artifact(np.random.default_rng(0), hidden=3, inputs=2)
    b = art.bounds() | given
    return _Bounds(**{f.name: getattr(art, f.name) for f in dataclasses.fields(Artifact)} | {"provenance": {"bounds": b}})


@pytest.mark.parametrize("key, attr", [("acc_w", "w"), ("zb", "act")])
def test_plan_at_each_float32_threshold(key, attr):
    for value, want in ((FLOAT32_EXACT - 1, F32), (FLOAT32_EXACT, F64), (FLOAT32_EXACT + 1, F64)):
        assert getattr(plan(_with_bounds(**{key: value})), attr) is want, (key, value)


def test_plan_at_the_float64_threshold():
    for value, work in ((FLOAT64_EXACT - 1, F64), (FLOAT64_EXACT, I64), (FLOAT64_EXACT + 1, I64)):
        pl = plan(_with_bounds(pre=value))
        assert pl.work is work
        # with int64 work the U product is the bare product of codes (here float32-exact)
        assert pl.u is (F64 if work is F64 else F32)
    assert plan(_with_bounds()).describe().startswith("W.h float32")
    assert plan(_with_bounds(), force_int64=True) == Plan(I64, I64, I64, I64, I64)


# --------------------------------------------------------------------------------------------
# Real artifacts just below and just above each threshold, run to their bounds.

def _extreme(art, **extra):
    """W, U and V all at their most negative code: from h0 = +h_max everywhere and x = +x_max, the
    products W.h, U.x and V.h meet their bounds exactly."""
    neg = {k: np.full_like(getattr(art, k), art.code_range(k)[0]) for k in ("W", "U", "V")}
    return dataclasses.replace(art, **(neg | extra)).validate()


def _run_to_bounds(art, steps=3):
    """Sequences from h0 = +h_max (and -h_max, 0) with inputs +-x_max: returns (x, h0)."""
    n, m, xm, hm = art.hidden_size, art.input_size, art.x_max, art.h_max
    x = np.stack([np.full((steps, m), xm), np.full((steps, m), -xm), np.full((steps, m), xm)]).astype(np.int64)
    h0 = np.stack([np.full(n, hm), np.full(n, art.h_min), np.zeros(n)]).astype(np.int64)
    return x, h0


def _check(art, want: dict, reach: tuple = ()):
    pl = plan(art)
    for attr, dt in want.items():
        assert getattr(pl, attr) is dt, (attr, pl.describe())
    x, h0 = _run_to_bounds(art)
    stats = {}
    H, Y = reference(art, x, h0, stats)
    b = art.bounds() | {"vh": vh_bound(art)}
    for key in reach:      # the run really formed the extreme value the condition is about
        assert stats[key] == b[key], (key, stats[key], b[key])
    # the plan as chosen (a small batch alone would run float64 products: see Stream), and the default
    for given in (pl, None):
        res = simulate(art, x, h0=h0, plan=given)
        assert np.array_equal(res.hidden, H) and np.array_equal(res.output, Y)
        assert np.array_equal(res.state, H[:, -1])
    return pl, x, h0, H


def _big_h(hidden, inputs=2, **kw):
    """8-bit W, U, V and 16-bit h and x: acc_w = n * 128 * 32767, below 2^24 for n = 4 and above
    for n = 5 (the same for V.h, and for U.x with m = 4 / 5)."""
    return random_artifact(np.random.default_rng(hidden), hidden=hidden, inputs=inputs, outputs=2, weight_bits=8,
                           act_bits=16, input_bits=16, output_bits=8, **kw)


def test_w_and_v_products_at_the_float32_threshold():
    below = _extreme(_big_h(4))
    assert vh_bound(below) == below.bounds()["acc_w"] == FLOAT32_EXACT - 512
    _check(below, {"w": F32, "v": F32, "work": F64}, reach=("acc_w", "vh"))
    above = _extreme(_big_h(5))
    assert vh_bound(above) == above.bounds()["acc_w"] > FLOAT32_EXACT
    _check(above, {"w": F64, "v": F64, "work": F64}, reach=("acc_w", "vh"))


def _sensitive(n, last_col):
    """z = W.h exactly (M'_W / 2^S = 1) and b just above -|z|, so |z| + b is a small number in the
    hidden range: an error of one in W.h changes h. W's last column is `last_col`."""
    art = with_requant(_big_h(n), m_w=1, shift_w=0)
    W = np.full((n, n), -128, dtype=np.int8)
    W[:, -1] = last_col
    aw = int(np.abs(W.astype(np.int64)).sum(axis=1)[0]) * art.h_max
    b = np.full(n, -(aw - 100), dtype=np.int32)
    return dataclasses.replace(art, W=W, b=b).validate(), aw


def test_float32_past_its_threshold_gives_wrong_integers():
    """Just above 2^24, an odd W.h; the plan keeps float64 and is exact, float32 would not be."""
    art, aw = _sensitive(5, -127)
    assert aw > FLOAT32_EXACT and aw % 2
    pl, x, h0, H = _check(art, {"w": F64, "act": F64})
    for wrong in (dataclasses.replace(pl, w=F32), dataclasses.replace(pl, act=F32)):
        assert not np.array_equal(simulate(art, x, h0=h0, plan=wrong).hidden, H)
    # just below: float32 W.h is exact and chosen; the same construction sees no error
    art4, aw4 = _sensitive(4, -128)
    assert aw4 == FLOAT32_EXACT - 512
    _check(art4, {"w": F32, "act": F64}, reach=("acc_w",))


@pytest.mark.parametrize("delta", [-1, 0, 1])
def test_activation_at_the_float32_threshold(delta):
    """zb = z + max|b| set to 2^24 - 1, 2^24 and 2^24 + 1 through the bias."""
    art = random_artifact(np.random.default_rng(7), hidden=6, inputs=3, act_bits=12, input_bits=10)
    big = FLOAT32_EXACT + delta - art.bounds()["z"]
    b = art.b.copy()
    b[0], b[1] = big, -big
    art = dataclasses.replace(art, b=b).validate()
    assert art.bounds()["zb"] == FLOAT32_EXACT + delta
    _check(art, {"act": F32 if delta < 0 else F64, "work": F64})


# The requantization at 2^53: n = 4 (acc_w just below 2^24), M'_W = 32767 * 2^14, and M'_U = m_u
# chosen so that pre lands within 2 acc_u of 2^53 on either side.
def _near_2_53(m_u, inputs=3):
    art = _big_h(4, inputs=inputs, shift=36)
    return _extreme(with_requant(art, m_w=32767, shift_w=22, m_u=m_u, shift_u=36))


def test_requant_just_below_2_53_runs_float64_at_its_bound():
    art = _near_2_53(40959)
    assert 0 < FLOAT64_EXACT - art.bounds()["pre"] < 2 * art.bounds()["acc_u"]
    _check(art, {"work": F64, "w": F32, "act": F32}, reach=("acc_w", "acc_u", "pre"))


def test_requant_just_above_2_53_runs_int64():
    art = _near_2_53(40961)
    assert 0 < art.bounds()["pre"] - FLOAT64_EXACT < 2 * art.bounds()["acc_u"]
    _check(art, {"work": I64, "w": F32, "u": F32, "act": F32}, reach=("acc_w", "acc_u", "pre"))


@pytest.mark.parametrize("inputs, u", [(4, F32), (5, F64)])
def test_input_product_with_int64_work_at_the_float32_threshold(inputs, u):
    art = _near_2_53(65535, inputs=inputs)
    assert (art.bounds()["acc_u"] < FLOAT32_EXACT) == (inputs == 4)
    _check(art, {"work": I64, "u": u}, reach=("acc_u", "pre"))


def test_force_int64_is_the_all_integer_path():
    art = _near_2_53(40959)
    x, h0 = _run_to_bounds(art)
    H, Y = reference(art, x, h0)
    res = simulate(art, x, h0=h0, force_int64=True)
    assert np.array_equal(res.hidden, H) and np.array_equal(res.output, Y)


def test_small_batches_fold_the_multiplier_only_where_exact():
    """Few sequences: float64 W (M'_W folded in) and activation when the requantization is float64;
    an int64-work plan is kept as it is."""
    from qornn.export.simulator import SMALL_TILE, Stream

    art = _big_h(4)
    assert plan(art).w is F32
    assert Stream(art, 1).plan == dataclasses.replace(plan(art), w=F64, act=F64)
    assert Stream(art, SMALL_TILE // 4).plan == plan(art)          # 1024 hidden values per tile: as planned
    big = _near_2_53(40961)
    assert Stream(big, 1).plan == plan(big) and plan(big).work is I64
