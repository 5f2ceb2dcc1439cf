"""rtl/cmvm.py: adder graphs of constant matrix-vector products (alkaid and CSD), proven and exact.

The graph is evaluated here the way its Verilog computes (rtl/cmvm.py `emit`): every adder works
modulo 2^width of its node, operands sign-extended or truncated to that width, the trimmed low
bits sliced off. So equality with K @ v (Python integers) checks both the op list and the widths;
the exhaustive box tests check that each width is the fewest bits that hold the node's values.
"""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import numpy as np
import pytest

from qornn.export.artifact import signed_bits
from qornn.rtl import cmvm

pytest.importorskip("alkaid")


def _wrap(v: int, w: int) -> int:
    v &= (1 << w) - 1
    return v - (1 << w) if v >> (w - 1) else v


def evaluate(g: cmvm.Graph, terms, v) -> list[int]:
    """Output values of the graph for the input vector v, adder by adder at the emitted widths."""
    val: dict[int, int] = {}
    for k, nd in enumerate(g.nodes):
        if nd.kind == "in":
            val[k] = int(v[nd.args[0]])
            continue
        a, la, sa, b, lb, sb, trim = nd.args
        w = signed_bits(nd.lo << trim, nd.hi << trim)
        s = _wrap(sa * _wrap(val[a] << la, w) + sb * _wrap(val[b] << lb, w), w)
        assert s & ((1 << trim) - 1) == 0, "trimmed bits are not zero"
        val[k] = s >> trim
    out = []
    for t in terms:
        if t is None:
            out.append(0)
            continue
        nd = g.nodes[t.node]
        e = nd.exp + t.shift
        assert e >= 0
        out.append((-1 if t.neg else 1) * (val[t.node] << e))
    return out


def solve(K, ranges, solver="alkaid", hard_dc=-1):
    g = cmvm.Graph(ranges)
    terms = cmvm.product(g, K, [g.input(j) for j in range(len(ranges))], solver, hard_dc)
    return g, terms


def vectors(ranges, rng, count=40):
    lo = [lo for lo, _ in ranges]
    hi = [hi for _, hi in ranges]
    out = [lo, hi, [(a + b) // 2 for a, b in ranges]]
    out += [[r[int(rng.integers(2))] for r in ranges] for _ in range(8)]   # corners
    out += [[int(rng.integers(a, b + 1)) for a, b in ranges] for _ in range(count)]
    return out


def check_exact(K, ranges, rng, solvers=("alkaid", "csd"), hard_dc=-1):
    Ki = [[int(c) for c in row] for row in np.asarray(K).tolist()]
    for solver in solvers:
        g, terms = solve(K, ranges, solver, hard_dc)
        assert len(terms) == len(Ki)
        for v in vectors(ranges, rng):
            want = [sum(c * x for c, x in zip(row, v)) for row in Ki]
            assert evaluate(g, terms, v) == want, (solver, v)
    return g


def random_matrix(rng, rows, cols, bits, narrow=False):
    if bits == 1:
        return rng.choice([-1, 1], size=(rows, cols))
    lo = -(1 << (bits - 1)) + (1 if narrow else 0)
    return rng.integers(lo, 1 << (bits - 1), size=(rows, cols))


SHAPES = [(1, 1, 4), (1, 7, 3), (7, 1, 5), (3, 5, 2), (8, 8, 1), (16, 10, 4), (16, 16, 4), (9, 3, 8),
          (5, 12, 6), (33, 5, 7), (64, 8, 4), (2, 2, 16)]


@pytest.mark.parametrize("rows,cols,bits", SHAPES)
def test_random_matrices_equal_K_times_v(rows, cols, bits):
    rng = np.random.default_rng(rows * 1000 + cols * 10 + bits)
    for narrow in (False, True):
        K = random_matrix(rng, rows, cols, bits, narrow and bits > 1)
        kx = int(rng.integers(2, 13))
        ranges = [(-(1 << (kx - 1)) + 1, (1 << (kx - 1)) - 1) if rng.random() < 0.5 else (0, (1 << kx) - 1)
                  for _ in range(cols)]
        check_exact(K, ranges, rng)


def test_ternary_zero_rows_and_columns_and_extremes():
    rng = np.random.default_rng(7)
    K = rng.integers(-1, 2, size=(12, 9))
    K[3] = 0                       # an all-zero row: output 0, no adder
    K[:, 5] = 0                    # an input no row uses
    K[7] = 0
    K[7, 2] = 1                    # a row that is one input (wiring)
    check_exact(K, [(-127, 127)] * 9, rng)
    for k in (2, 4, 8, 12):        # the extreme codes of k bits, +-2^(k-1)
        E = np.array([[-(1 << (k - 1)), (1 << (k - 1)) - 1, 1 << (k - 1)],
                      [(1 << (k - 1)) - 1, -(1 << (k - 1)), -(1 << (k - 1))]])
        check_exact(E, [(-(1 << 7), (1 << 7) - 1), (0, 255), (-1, 0)], rng)
    g, terms = solve(np.zeros((4, 3), dtype=int), [(-8, 7)] * 3)
    assert terms == [None] * 4 and g.adders == 0


def test_one_by_one_and_constant_inputs():
    rng = np.random.default_rng(3)
    for c in (-128, -3, -1, 0, 1, 2, 5, 127, 1 << 15):
        check_exact(np.array([[c]]), [(-5, 9)], rng)
    check_exact(np.array([[3, -2], [1, 1]]), [(4, 4), (-7, -7)], rng)   # single-valued inputs


def test_n64_ternary_and_4bit():
    rng = np.random.default_rng(64)
    check_exact(rng.integers(-1, 2, size=(64, 64)), [(0, 255)] * 64, rng, solvers=("alkaid",))
    g = check_exact(random_matrix(rng, 64, 16, 4), [(-128, 127)] * 16, rng)
    assert g.adders > 0


@pytest.mark.parametrize("hard_dc", [0, 1, 3])
def test_depth_constrained_graphs_are_exact(hard_dc):
    rng = np.random.default_rng(20 + hard_dc)
    K = random_matrix(rng, 16, 16, 4)
    g = check_exact(K, [(0, 255)] * 16, rng, solvers=("alkaid",), hard_dc=hard_dc)
    g0, t0 = solve(K, [(0, 255)] * 16, "alkaid", -1)
    assert g.adders >= g0.adders * 0.9          # the depth bound costs adders, never saves many


def test_alkaid_solution_is_deterministic():
    """The core's Verilog (and so the build cache key) must not change from run to run."""
    K = random_matrix(np.random.default_rng(5), 16, 16, 4)
    a = [(nd.args, nd.lo, nd.hi) for nd in solve(K, [(0, 255)] * 16)[0].nodes]
    b = [(nd.args, nd.lo, nd.hi) for nd in solve(K, [(0, 255)] * 16)[0].nodes]
    assert a == b


@pytest.mark.parametrize("seed", range(6))
def test_widths_are_exact_bounds_over_small_boxes(seed):
    """Every node's [lo, hi] is its exact range over the box (so its width is the fewest bits that
    hold it), found by enumerating every input vector; and every value computes exactly."""
    rng = np.random.default_rng(100 + seed)
    cols = int(rng.integers(1, 4))
    K = random_matrix(rng, int(rng.integers(1, 5)), cols, int(rng.integers(1, 6)))
    ranges = []
    for _ in range(cols):
        a = int(rng.integers(-9, 6))
        ranges.append((a, a + int(rng.integers(0, 10))))
    for solver in ("alkaid", "csd"):
        g, terms = solve(K, ranges, solver)
        box = list(itertools.product(*[range(a, b + 1) for a, b in ranges]))
        for k, nd in enumerate(g.nodes):
            vals = [sum(int(c) * x for c, x in zip(nd.coef, v)) for v in box]
            assert (min(vals), max(vals)) == (nd.lo, nd.hi), (solver, k)
            if nd.kind == "add":
                w = signed_bits(nd.lo, nd.hi)
                assert w == 1 or not all(-(1 << (w - 2)) <= x < (1 << (w - 2)) for x in vals)  # w-1 bits fail
        for v in box:
            assert evaluate(g, terms, v) == [sum(int(c) * x for c, x in zip(row, v)) for row in K.tolist()]


# --- the proof refuses a wrong solver result -------------------------------------------------

def _corrupting(monkeypatch, mutate):
    alkaid, real = cmvm._alkaid_import()

    def fake(kernel, **kw):
        c0, c1 = real(kernel, **kw)
        ops = list(c1.ops)
        ops = mutate(ops)
        return c0, SimpleNamespace(ops=ops, inp_shifts=c1.inp_shifts, out_idxs=c1.out_idxs,
                                   out_shifts=c1.out_shifts, out_negs=c1.out_negs)

    monkeypatch.setattr(cmvm, "_alkaid_import", lambda: (alkaid, fake))


def _flip_first_add(ops):
    for k, op in enumerate(ops):
        if op.opcode in (0, 1):
            ops[k] = SimpleNamespace(opcode=1 - op.opcode, addr=op.addr, data=op.data)
            return ops
    raise AssertionError("no adder in the op list")


def _shift_last_add(ops):
    for k in reversed(range(len(ops))):
        op = ops[k]
        if op.opcode in (0, 1):
            ops[k] = SimpleNamespace(opcode=op.opcode, addr=op.addr, data=(int(op.data[0]) + 1,) + tuple(op.data[1:]))
            return ops
    raise AssertionError("no adder in the op list")


@pytest.mark.parametrize("mutate", [_flip_first_add, _shift_last_add])
def test_proof_refuses_a_corrupted_op_list(monkeypatch, mutate):
    K = random_matrix(np.random.default_rng(9), 8, 8, 4)
    ok_g, _ = solve(K, [(0, 255)] * 8)            # the genuine list passes
    _corrupting(monkeypatch, mutate)
    g = cmvm.Graph([(0, 255)] * 8)
    with pytest.raises(cmvm.SolverMismatch):
        cmvm.product(g, K, [g.input(j) for j in range(8)], "alkaid")
    assert len(g.nodes) == 8                      # nothing of the refused graph is left


def test_parallel_core_falls_back_to_csd_when_alkaid_is_refused(monkeypatch):
    from qornn.errors import QornnError
    from qornn.rtl.parallel import generate
    from qornn.testing import random_artifact

    art = random_artifact(np.random.default_rng(4), hidden=6, inputs=3, outputs=2, weight_bits=4)
    v_alk, st_alk = generate(art, solver="alkaid")
    assert (st_alk["solver"]["W"], st_alk["solver"]["U"], st_alk["solver"]["V"]) == ("alkaid",) * 3
    _corrupting(monkeypatch, _flip_first_add)
    v, st = generate(art, solver="auto")
    assert all(st["solver"][k].startswith("csd (alkaid refused") for k in "WUV")
    strip = lambda s: "\n".join(ln for ln in s.splitlines() if "solver" not in ln)
    assert strip(v) != strip(v_alk)
    with pytest.raises(QornnError):
        generate(art, solver="alkaid")


def test_float32_limit_is_refused_not_rounded():
    g = cmvm.Graph([(0, 3)])
    with pytest.raises(cmvm.SolverMismatch):
        cmvm.product(g, [[(1 << 24) + 1]], [g.input(0)], "alkaid")
    g, terms = solve([[(1 << 24) + 1]], [(0, 3)], "csd")
    assert evaluate(g, terms, [3]) == [3 * ((1 << 24) + 1)]


def test_auto_uses_csd_above_the_size_limit_without_calling_alkaid(monkeypatch):
    from qornn.rtl import parallel
    from qornn.testing import random_artifact

    monkeypatch.setattr(parallel, "AUTO_MAX_ELEMENTS", 6 * 6)   # the same rule on a small core
    art = random_artifact(np.random.default_rng(5), hidden=7, inputs=3, outputs=2, weight_bits=4)

    def no_alkaid(*a, **k):
        raise AssertionError("alkaid was asked for a product above the limit")
    real = cmvm.product

    def guarded(g, rows, *a, **k):
        if len(rows) * len(rows[0]) > 36:
            no_alkaid()
        return real(g, rows, *a, **k)
    monkeypatch.setattr(cmvm, "product", guarded)
    _, st = parallel.generate(art, solver="auto")
    assert st["solver"]["W"].startswith("csd (auto: 7x7")
    assert st["solver"]["U"] == "alkaid" and st["solver"]["V"] == "alkaid"   # 7x3 and 2x7 stay below it
