"""The simulator against a slow, independent, per-element integer implementation (Python ints)."""

import numpy as np
import pytest

from qornn.errors import QornnError
from qornn.export.arith import plan
from qornn.export.simulator import quantize_input, simulate
from qornn.testing import boundary_inputs, random_artifact


def reference(art, x, h0=None, stats=None):
    """docs/spec.md, one element at a time, with Python's unbounded integers.

    `h0` (B, n) starts each sequence from that state; `stats` (a dict) receives the largest
    magnitudes met: 'acc_w' (|W.h|), 'acc_u', 'pre' (|p| + 2^(S-1), the spec's form), 'zb' (||z| + b|), 'vh' (|V.h|), so a
    test can show that it reached the bound it is about."""
    W, U, V = art.W.tolist(), art.U.tolist(), art.V.tolist()
    b, c = art.b.tolist(), art.c.tolist()
    n, o = art.hidden_size, art.output_size
    hmax = art.h_max
    S = max(art.shift_w, art.shift_u)
    mw, mu = art.m_w * 2 ** (S - art.shift_w), art.m_u * 2 ** (S - art.shift_u)
    H, Y = [], []
    st = {"acc_w": 0, "acc_u": 0, "pre": 0, "zb": 0, "vh": 0}
    for bi, seq in enumerate(x.tolist()):
        h = [0] * n if h0 is None else [int(v) for v in h0[bi]]
        hs, ys = [], []
        for xt in seq:
            new = []
            for i in range(n):
                aw = sum(W[i][j] * h[j] for j in range(n))
                au = sum(U[i][k] * xt[k] for k in range(len(xt)))
                p = mw * aw + mu * au
                z = (p + 2 ** (S - 1)) // 2**S if S > 0 else p
                for key, v in (("acc_w", abs(aw)), ("acc_u", abs(au)), ("pre", abs(p) + (2 ** (S - 1) if S else 0)),
                               ("zb", abs(abs(z) + b[i]))):
                    st[key] = max(st[key], v)
                if art.activation == "modrelu":
                    a = min(max(abs(z) + b[i], 0), hmax)
                    new.append(a if z > 0 else -a if z < 0 else 0)
                else:
                    new.append(min(max(z, 0), hmax))
            h = new
            hs.append(h)
            vh = [sum(V[q][i] * h[i] for i in range(n)) for q in range(o)]
            st["vh"] = max([st["vh"]] + [abs(v) for v in vh])
            ys.append([v + c[q] for q, v in enumerate(vh)])
        H.append(hs)
        Y.append(ys if art.output_mode == "every_step" else ys[-1])
    if stats is not None:
        stats.update(st)
    return np.array(H, dtype=np.int64), np.array(Y, dtype=np.int64)


CASES = [  # hidden, inputs, outputs, weight bits, act bits, activation, output mode, time
    (37, 10, 9, 3, 9, "modrelu", "every_step", 12),
    (1, 1, 1, 1, 2, "modrelu", "every_step", 20),
    (255, 3, 2, 8, 16, "modrelu", "last_step", 3),
    (5, 4, 3, 2, 3, "relu", "every_step", 30),
    (16, 7, 4, 4, 8, "relu", "last_step", 15),
    (23, 2, 5, 5, 12, "modrelu", "last_step", 10),
    (9, 6, 2, 6, 5, "modrelu", "every_step", 25),
    (31, 5, 3, 7, 14, "relu", "every_step", 8),
    (2, 9, 1, 1, 16, "relu", "last_step", 40),
]


@pytest.mark.parametrize("case", CASES, ids=[f"n{c[0]}-w{c[3]}-a{c[4]}-{c[5]}-{c[6]}" for c in CASES])
def test_simulator_equals_reference(case):
    n, m, o, kw, ka, act, mode, T = case
    rng = np.random.default_rng(n * 1000 + kw * 10 + ka)
    for trial in range(3):
        art = random_artifact(rng, hidden=n, inputs=m, outputs=o, weight_bits=kw, act_bits=ka,
                              input_bits=int(rng.integers(2, 17)), output_bits=int(rng.integers(1, 9)),
                              activation=act, output_mode=mode, shift=int(rng.integers(0, 20)))
        x = boundary_inputs(art, rng, 3, T)
        H, Y = reference(art, x)
        # the default (small batch: float64 products), the bound-derived plan (float32 where proven,
        # what large batches run), and all int64
        for opts in ({}, {"plan": plan(art)}, {"force_int64": True}):
            res = simulate(art, x, **opts)
            assert res.hidden.dtype == np.int64 and res.output.dtype == np.int64
            assert np.array_equal(res.hidden, H)
            assert np.array_equal(res.output, Y)


def test_saturation_is_reached():
    """The boundary inputs must actually exercise the clamp, or the tests above prove less."""
    rng = np.random.default_rng(3)
    art = random_artifact(rng, hidden=37, inputs=10, act_bits=9, weight_bits=3)
    h = simulate(art, boundary_inputs(art, rng, 8, 100)).hidden
    assert (np.abs(h) == art.h_max).mean() > 0.01 and (h == 0).mean() > 0.01


def test_reference_detects_a_changed_weight():
    rng = np.random.default_rng(5)
    art = random_artifact(rng, hidden=7, inputs=3, weight_bits=4, act_bits=8)
    x = boundary_inputs(art, rng, 2, 10)
    before = simulate(art, x).output
    art.W[0, 0] = art.W[0, 0] + 1 if art.W[0, 0] < 7 else art.W[0, 0] - 1
    assert not np.array_equal(simulate(art, x).output, before)


def test_real_inputs_are_quantized_round_half_up():
    rng = np.random.default_rng(0)
    art = random_artifact(rng, hidden=3, inputs=2, input_bits=4)  # x_max = 7, s_x = 1/8
    x = np.array([[[0.5 / 8, -0.5 / 8], [2.0, -2.0]]])
    assert quantize_input(art, x).tolist() == [[[1, 0], [7, -7]]]
    assert np.array_equal(simulate(art, x).output, simulate(art, quantize_input(art, x)).output)


@pytest.mark.parametrize("x, msg", [
    (np.zeros((2, 3)), "shape"),
    (np.zeros((2, 3, 4)), "shape"),
    (np.full((1, 2, 5), 200), "codes must lie"),
    (np.full((1, 2, 5), np.nan), "NaN"),
    (np.zeros((1, 2, 5), dtype=bool), "dtype"),
])
def test_bad_inputs(x, msg):
    art = random_artifact(np.random.default_rng(0), hidden=4, inputs=5)
    with pytest.raises(QornnError, match=msg):
        simulate(art, x)


STREAM_CASES = [  # hidden, inputs, outputs, activation, output mode, force_int64
    (13, 3, 2, "modrelu", "every_step", False),
    (13, 3, 2, "relu", "last_step", False),
    (9, 4, 3, "modrelu", "last_step", True),
    (6, 2, 2, "relu", "every_step", True),
]


@pytest.mark.parametrize("case", STREAM_CASES, ids=[f"{c[3]}-{c[4]}-{'int64' if c[5] else 'auto'}" for c in STREAM_CASES])
def test_state_carries_across_calls(case):
    """Cutting the sequences anywhere and continuing from `state` gives the uncut run's integers."""
    n, m, o, act, mode, force = case
    rng = np.random.default_rng(n + m)
    art = random_artifact(rng, hidden=n, inputs=m, outputs=o, activation=act, output_mode=mode)
    x = boundary_inputs(art, rng, 5, 61)
    whole = simulate(art, x, force_int64=force)
    for cuts in ([1], [30], [7, 8, 40], list(range(1, 61))):
        state, hs, ys = None, [], []
        for a, b in zip([0] + cuts, cuts + [61]):
            part = simulate(art, x[:, a:b], h0=state, force_int64=force)
            state = part.state
            hs.append(part.hidden)
            ys.append(part.output)
        assert np.array_equal(np.concatenate(hs, axis=1), whole.hidden)
        assert np.array_equal(state, whole.hidden[:, -1]) and np.array_equal(state, whole.state)
        if mode == "every_step":
            assert np.array_equal(np.concatenate(ys, axis=1), whole.output)
        else:
            assert np.array_equal(ys[-1], whole.output)


def test_stream_runs_blocks_with_one_state():
    from qornn.export.simulator import Stream

    rng = np.random.default_rng(4)
    art = random_artifact(rng, hidden=10, inputs=3, output_mode="last_step")
    x = boundary_inputs(art, rng, 4, 50)
    s = Stream(art, 4)
    parts = [s.run(x[:, a:b]) for a, b in ((0, 17), (17, 18), (18, 50))]
    assert all(y is None for y, _ in parts)
    whole = simulate(art, x)
    assert np.array_equal(np.concatenate([h for _, h in parts], axis=1), whole.hidden)
    assert np.array_equal(s.last_output(), whole.output) and np.array_equal(s.state, whole.state)
    with pytest.raises(QornnError, match="input block must have shape"):
        s.run(x[:3])


def test_initial_state_is_checked_and_used():
    rng = np.random.default_rng(6)
    art = random_artifact(rng, hidden=5, inputs=2, act_bits=6, activation="relu")
    x = boundary_inputs(art, rng, 2, 9)
    h0 = np.array([[0, 31, 5, 0, 1], [31, 31, 31, 31, 31]])
    H, Y = reference(art, x, h0)
    res = simulate(art, x, h0=h0)
    assert np.array_equal(res.hidden, H) and np.array_equal(res.output, Y)
    assert not np.array_equal(res.hidden, simulate(art, x).hidden)
    for bad, msg in ((np.zeros((3, 5), dtype=np.int64), "initial state must be"),
                     (np.zeros((2, 5)), "integer hidden codes"),
                     (np.full((2, 5), -1), r"lie in \[0, 31\]"),     # ReLU: no negative codes
                     (np.full((2, 5), 32), r"lie in \[0, 31\]")):
        with pytest.raises(QornnError, match=msg):
            simulate(art, x, h0=bad)
