"""Constant matrix-vector products as adder graphs, proven equal to their matrix before any Verilog.

A product y = K v with a constant integer matrix K needs no multiplier: it is a graph of
two-operand adders over shifted operands. Two solvers build the graph:

* ``alkaid`` -- the constant matrix-vector solver of alkaid (PyPI, da4ml's successor,
  LGPL-3.0-or-later, imported as a library): ``alkaid.cmvm.cmvm_solve`` shares subexpressions
  across rows (39 % fewer adders than CSD in the n = 16, 4-bit core, yet only 9 % fewer iCE40 LUT4:
  docs/hardware.md). Only its op
  list (add / subtract with a shift) is used; not its tracer (da4ml's min/clip tracing computed
  wrong values, DESIGN.md), not its code generator, not its widths.
* ``csd`` -- the canonical-signed-digit digits of each constant, grouped by shift (bit planes),
  each plane a balanced tree narrowest-first (`rtl/csd.py`'s scheme); no dependency.

Whatever the solver, `Graph` rebuilds the products here from the op list and carries every node's
exact linear form over the primary inputs (integer coefficients). Two things follow:

1. **Proof.** Each output's form must equal the wanted row of K times the inputs' forms, compared
   with `==` on Python integers, before the graph is used; a solver result that is not is refused
   (`SolverMismatch`; `solver='auto'` then falls back to csd). So a wrong solver cannot give a
   wrong core -- and the Verilator tests check the emitted Verilog as well.
2. **Widths.** The largest and smallest values of a linear form over a box of inputs are reached
   at a corner, so every node's bound is exact (interval arithmetic over a tree with shared,
   correlated operands would overestimate), and its wire gets the fewest two's-complement bits
   that hold it. Every adder computes modulo 2^width, exact because the value fits; a common
   power of two of a node's coefficients is sliced off (low bits that are always 0).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import gcd

import numpy as np

from qornn.errors import QornnError

from .csd import Expr, Netlist, csd

SOLVERS = ("auto", "alkaid", "csd")
ALKAID_VERSION = "0.8.2"   # the version whose solutions the tests certify (pinned in constraints.txt)


class SolverMismatch(QornnError):
    """A solver's adder graph does not compute its matrix (refused before any Verilog is written)."""


class SolverMissing(QornnError):
    """The alkaid solver is not installed."""


@dataclass(frozen=True)
class Term:
    """sign * node * 2^shift: a reference to a node's value, scaled by wiring only."""
    node: int
    shift: int = 0
    neg: bool = False

    def scaled(self, shift: int = 0, neg: bool = False) -> "Term":
        return Term(self.node, self.shift + shift, self.neg != neg)


@dataclass
class Node:
    """N, an integer wire; its value is N * 2^exp. N = coef . v over the primary inputs v."""
    kind: str                  # 'in' or 'add'
    exp: int
    coef: np.ndarray           # object array of Python ints
    lo: int
    hi: int
    level: int                 # adders on the longest path from an input
    # 'in': (input index,); 'add': (node a, left shift a, sign a, node b, left shift b, sign b, trim)
    args: tuple = ()


def _v2(x: int) -> int:
    """The exponent of 2 in x (x != 0)."""
    return (x & -x).bit_length() - 1


@dataclass
class Graph:
    """An adder graph over primary inputs v_j in [lo_j, hi_j] (integers)."""
    ranges: list
    nodes: list = field(default_factory=list)

    def __post_init__(self):
        self._lo = np.array([int(lo) for lo, _ in self.ranges], dtype=object)
        self._hi = np.array([int(hi) for _, hi in self.ranges], dtype=object)
        k = len(self.ranges)
        for j, (lo, hi) in enumerate(self.ranges):
            coef = np.zeros(k, dtype=object)
            coef[j] = 1
            self.nodes.append(Node("in", 0, coef, int(lo), int(hi), 0, (j,)))

    def input(self, j: int) -> Term:
        return Term(j)

    @property
    def adders(self) -> int:
        return sum(1 for nd in self.nodes if nd.kind == "add")

    def _bounds(self, coef) -> tuple[int, int]:
        pos = coef > 0
        hi = int(np.where(pos, coef * self._hi, coef * self._lo).sum())
        lo = int(np.where(pos, coef * self._lo, coef * self._hi).sum())
        return lo, hi

    def value(self, t: Term | None):
        """The exact linear form of a term's value as (coefficients, exponent): value = coef.v * 2^exp."""
        if t is None:
            return np.zeros(len(self.ranges), dtype=object), 0
        nd = self.nodes[t.node]
        return (-nd.coef if t.neg else nd.coef), nd.exp + t.shift

    def integer_form(self, t: Term | None):
        """The term's value as integer coefficients over v, or None when they are not integers."""
        coef, e = self.value(t)
        if e >= 0:
            return coef * (1 << e)
        d = 1 << -e
        if any(int(c) % d for c in coef):
            return None
        return np.array([int(c) // d for c in coef], dtype=object)

    def add(self, a: Term | None, b: Term | None, sub: bool = False) -> Term | None:
        """a + b (or a - b) as a new node; None is the constant 0."""
        if b is None:
            return a
        if a is None:
            return b.scaled(neg=sub)
        na, nb = self.nodes[a.node], self.nodes[b.node]
        ea, eb = na.exp + a.shift, nb.exp + b.shift
        sa, sb = (-1 if a.neg else 1), (-1 if b.neg else 1) * (-1 if sub else 1)
        neg = sa < 0 and sb < 0             # -A - B is stored as A + B and referenced negated
        if neg:
            sa = sb = 1
        e = min(ea, eb)
        la, lb = ea - e, eb - e
        coef = sa * na.coef * (1 << la) + sb * nb.coef * (1 << lb)
        g = 0
        for c in coef:
            if c:
                g = gcd(g, int(c))
        if g == 0:
            return None                     # the two terms cancel
        trim = _v2(g)                       # low bits that are 0 for every input
        if trim:
            coef = np.array([int(c) >> trim for c in coef], dtype=object)
        lo, hi = self._bounds(coef)
        self.nodes.append(Node("add", e + trim, coef, lo, hi, max(na.level, nb.level) + 1,
                               (a.node, la, sa, b.node, lb, sb, trim)))
        return Term(len(self.nodes) - 1, 0, neg)

    def depth(self, terms) -> int:
        return max([self.nodes[t.node].level for t in terms if t is not None] + [0])

    def check(self, K, in_terms, out_terms, who: str) -> None:
        """The proof: out_i == sum_j K[i, j] in_j as exact linear forms over the primary inputs."""
        forms = [self.integer_form(t) for t in in_terms]
        if any(f is None for f in forms):
            raise SolverMismatch(f"{who}: an input of the product is not an integer form")
        for i, t in enumerate(out_terms):
            want = np.zeros(len(self.ranges), dtype=object)
            for j, f in enumerate(forms):
                if int(K[i][j]):
                    want = want + int(K[i][j]) * f
            got = self.integer_form(t)
            if got is None or not all(int(x) == int(y) for x, y in zip(got, want)):
                raise SolverMismatch(f"{who}: output {i} of the adder graph is not row {i} of its matrix")


# ---------------------------------------------------------------------------------------------
# solvers: K (rows x cols, Python/NumPy ints), in_terms (cols) -> out_terms (rows), then checked

def _csd_product(g: Graph, K, in_terms) -> list:
    out = []
    for row in K:
        planes: dict[int, list] = {}
        for c, t in zip(row, in_terms):
            if t is not None:
                for k, d in csd(int(c)):
                    planes.setdefault(k, []).append(t.scaled(k, d < 0))
        parts = [_balanced(g, planes[k]) for k in sorted(planes)]
        out.append(_balanced(g, [p for p in parts if p is not None]))
    return out


def _width(g: Graph, t: Term) -> int:
    from qornn.export.artifact import signed_bits

    nd = g.nodes[t.node]
    return signed_bits(nd.lo, nd.hi) + nd.exp + t.shift


def _balanced(g: Graph, terms: list) -> Term | None:
    """Sum of terms, pairing the narrowest first (Huffman-like: keeps the adders short); a
    positive term is paired with a negative one where it can (a subtraction, never a negation)."""
    xs = sorted(terms, key=lambda t: (_width(g, t), t.neg))
    while len(xs) > 1:
        a = xs.pop(0)
        j = next((k for k, t in enumerate(xs[:2]) if t.neg != a.neg), 0)   # one of the two narrowest
        b = xs.pop(j)
        if a.neg and not b.neg:
            a, b = b, a
        s = g.add(a, b)
        if s is None:
            continue
        w = _width(g, s)
        i = 0
        while i < len(xs) and _width(g, xs[i]) <= w:
            i += 1
        xs.insert(i, s)
    return xs[0] if xs else None


def _alkaid_import():
    try:
        import alkaid
        from alkaid.cmvm import cmvm_solve
    except ImportError:
        raise SolverMissing("the alkaid solver is not installed (pip install alkaid==0.8.2; make setup does it)") from None
    return alkaid, cmvm_solve


def _replay(g: Graph, comb, in_terms) -> list:
    """One of alkaid's CombLogic stages on our terms: its inputs are in_terms scaled by inp_shifts."""
    buf = []
    for op in comb.ops:
        if op.opcode == -1:
            t = in_terms[op.data[0]]
            buf.append(None if t is None else t.scaled(int(comb.inp_shifts[op.data[0]])))
        elif op.opcode in (0, 1):
            b = buf[op.addr[1]]
            buf.append(g.add(buf[op.addr[0]], None if b is None else b.scaled(int(op.data[0])), sub=op.opcode == 1))
        elif op.opcode == -2:
            a = buf[op.addr[0]]
            buf.append(None if a is None else a.scaled(neg=True))
        else:
            raise SolverMismatch(f"alkaid returned opcode {op.opcode}, which a constant product does not use")
    out = []
    for idx, sh, ng in zip(comb.out_idxs, comb.out_shifts, comb.out_negs):
        t = None if idx < 0 else buf[idx]
        out.append(None if t is None else t.scaled(int(sh), bool(ng)))
    return out


def _alkaid_product(g: Graph, K, in_terms, hard_dc: int) -> list:
    _, cmvm_solve = _alkaid_import()
    K = np.asarray(K, dtype=object)
    if K.size and max(abs(int(v)) for v in K.ravel()) >= 1 << 24:
        raise SolverMismatch("alkaid takes float32 constants: a constant of 2^24 or more is not exact there")
    kernel = np.ascontiguousarray(np.array(K.T, dtype=np.float64).astype(np.float32))
    qint = []
    for t in in_terms:
        if t is None:
            qint.append((0.0, 0.0, 1.0))
            continue
        nd = g.nodes[t.node]
        e = nd.exp + t.shift
        lo, hi = (-nd.hi, -nd.lo) if t.neg else (nd.lo, nd.hi)
        qint.append((float(lo) * 2.0 ** e, float(hi) * 2.0 ** e, 2.0 ** e))
    try:
        c0, c1 = cmvm_solve(kernel, hard_dc=int(hard_dc), qintervals=qint)
    except Exception as exc:   # a solver failure is a refusal of this solver, not a crash of qornn
        raise SolverMismatch(f"alkaid's cmvm_solve failed: {type(exc).__name__}: {exc}") from None
    return _replay(g, c1, _replay(g, c0, in_terms))


def product(g: Graph, K, in_terms, solver: str = "alkaid", hard_dc: int = -1, who: str = "product") -> list:
    """out = K . in as nodes of g, by `solver` ('alkaid' or 'csd'); proven exact (SolverMismatch if not)."""
    K = [[int(v) for v in row] for row in np.asarray(K).tolist()]
    mark = len(g.nodes)
    try:
        out = _alkaid_product(g, K, in_terms, hard_dc) if solver == "alkaid" else _csd_product(g, K, in_terms)
        g.check(K, in_terms, out, f"{solver} {who}")
    except SolverMismatch:
        del g.nodes[mark:]
        raise
    return out


# ---------------------------------------------------------------------------------------------
# Verilog

def _operand(net: Netlist, e: Expr, shift: int, w: int) -> str | None:
    """e << shift as a w-bit pattern (modulo 2^w); None when it is 0 modulo 2^w."""
    if shift >= w:
        return None
    base = net.ext(e, w - shift)
    return f"{{{base}, {shift}'b0}}" if shift else base


def emit(net: Netlist, g: Graph, inputs: list[Expr], outputs: list) -> list[Expr | None]:
    """Verilog wires of every node the outputs need (inputs[j] is primary input j, whose bounds
    must be g's); returns each output term materialized (shift = wiring, sign = one negation)."""
    from qornn.export.artifact import signed_bits

    for j, x in enumerate(inputs):
        nd = g.nodes[j]
        if (x.lo, x.hi) != (nd.lo, nd.hi):
            raise QornnError(f"adder graph input {j}: the wire's bounds {x.lo}..{x.hi} are not the graph's")
    need = set()
    stack = [t.node for t in outputs if t is not None]
    while stack:
        k = stack.pop()
        if k in need:
            continue
        need.add(k)
        nd = g.nodes[k]
        if nd.kind == "add":
            stack += [nd.args[0], nd.args[3]]
    wires: dict[int, Expr] = {j: x for j, x in enumerate(inputs)}
    for k in sorted(need):
        nd = g.nodes[k]
        if nd.kind == "in":
            continue
        a, la, sa, b, lb, sb, trim = nd.args
        lo, hi = nd.lo << trim, nd.hi << trim
        w = signed_bits(lo, hi)
        oa, ob = _operand(net, wires[a], la, w), _operand(net, wires[b], lb, w)
        plus = [o for o, sg in ((oa, sa), (ob, sb)) if o and sg > 0]
        minus = [o for o, sg in ((oa, sa), (ob, sb)) if o and sg < 0]
        expr = " + ".join(plus) or f"{w}'d0"
        for o in minus:
            expr += f" - {o}"
        net.adders += 1
        s = net.wire(expr, lo, hi)
        if trim:
            s = net.wire(f"{s.name}[{s.width - 1}:{trim}]" if s.width - trim > 0 else f"{w}'d0", nd.lo, nd.hi)
        wires[k] = s
    out = []
    for t in outputs:
        if t is None:
            out.append(None)
            continue
        nd = g.nodes[t.node]
        e = nd.exp + t.shift
        if e < 0:
            raise QornnError("an adder graph output is not an integer (an unproven graph?)")
        out.append(net.shifted(wires[t.node], e, -1 if t.neg else 1))
    return out


def solver_available() -> tuple[bool, str]:
    """(True, version) when alkaid imports, else (False, why)."""
    try:
        alkaid, _ = _alkaid_import()
    except QornnError as exc:
        return False, str(exc)
    from importlib.metadata import version

    return True, version("alkaid")
