"""Constant arithmetic without multipliers: canonical signed digits and adder trees in Verilog.

A constant product c*v is the sum of the CSD digits of c as shifted copies of v (at most
ceil(k/2)+1 nonzero digits for a k-bit code), so a constant matrix-vector product is a tree of
adders over shifted inputs. Every node of the tree gets the width of its own exact bound, so
nothing wraps and no bit is wasted (yosys does not narrow sign-extended adders by itself).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from qornn.export.artifact import signed_bits


def csd(c: int) -> list[tuple[int, int]]:
    """Canonical signed-digit form of c: [(shift, +1 | -1), ...], no two adjacent nonzero digits."""
    out, k, c = [], 0, int(c)
    while c:
        if c & 1:
            d = 2 - (c & 3)          # +1 if c = 1 mod 4, -1 if c = 3 mod 4
            out.append((k, d))
            c -= d
        c >>= 1
        k += 1
    return out


def lit(c: int, w: int) -> str:
    """The w-bit two's-complement pattern of c as an unsigned literal (exact in any context of w bits)."""
    return f"{w}'d{int(c) % (1 << w)}"


@dataclass
class Expr:
    """A wire of the netlist: its Verilog name, two's-complement width and value bounds."""
    name: str
    width: int
    lo: int
    hi: int


@dataclass
class Netlist:
    """Collects `wire signed [w-1:0] name = expr;` lines with unique names."""
    prefix: str = "t"
    lines: list = field(default_factory=list)
    count: int = 0
    adders: int = 0

    def wire(self, expr: str, lo: int, hi: int, name: str | None = None) -> Expr:
        w = signed_bits(lo, hi)
        if name is None:
            name = f"{self.prefix}{self.count}"
            self.count += 1
        self.lines.append(f"wire signed [{w - 1}:0] {name} = {expr};")
        return Expr(name, w, lo, hi)

    def ext(self, e: Expr, w: int) -> str:
        """e sign-extended to w bits (explicit: no reliance on Verilog's context-width rules)."""
        if w == e.width:
            return e.name
        if w < e.width:      # the value fits w bits (its bounds say so): drop the copies of the sign
            return f"{e.name}[{w - 1}:0]"
        if e.width == 1:
            return f"{{{w}{{{e.name}}}}}"
        return f"{{{{{w - e.width}{{{e.name}[{e.width - 1}]}}}}, {e.name}}}"

    def shifted(self, e: Expr, k: int, sign: int) -> Expr:
        """sign * (e << k): a term of a constant product (wiring plus, for -1, a negation)."""
        lo, hi = (e.lo << k, e.hi << k) if sign > 0 else (-(e.hi << k), -(e.lo << k))
        w = signed_bits(lo, hi)
        base = self.ext(e, w - k) if k else self.ext(e, w)
        val = f"{{{base}, {k}'b0}}" if k else base
        if sign < 0:
            self.adders += 1
            return self.wire(f"-{val}", lo, hi)
        return self.wire(val, lo, hi) if k or val != e.name else e

    def add(self, a: Expr, b: Expr, sub: bool = False) -> Expr:
        lo, hi = (a.lo - b.hi, a.hi - b.lo) if sub else (a.lo + b.lo, a.hi + b.hi)
        w = signed_bits(lo, hi)
        self.adders += 1
        return self.wire(f"{self.ext(a, w)} {'-' if sub else '+'} {self.ext(b, w)}", lo, hi)

    def const(self, c: int) -> Expr:
        w = signed_bits(min(c, 0), max(c, 0))
        return self.wire(lit(c, w), c, c)

    def tree(self, terms: list[tuple[Expr, int]]) -> Expr | None:
        """Balanced sum of signed terms [(expr, +1 | -1)]; subtractions replace negations where they can."""
        if not terms:
            return None
        pos = [e for e, s in terms if s > 0]
        neg = [e for e, s in terms if s < 0]
        p = self._balanced(pos)
        q = self._balanced(neg)
        if p is None:
            return self.wire(f"-{self.ext(q, signed_bits(-q.hi, -q.lo))}", -q.hi, -q.lo)
        return p if q is None else self.add(p, q, sub=True)

    def _balanced(self, xs: list[Expr]) -> Expr | None:
        xs = sorted(xs, key=lambda e: e.width)
        while len(xs) > 1:   # pair the narrowest first (Huffman-like: keeps the adders short)
            a, b = xs.pop(0), xs.pop(0)
            s = self.add(a, b)
            i = 0
            while i < len(xs) and xs[i].width <= s.width:
                i += 1
            xs.insert(i, s)
        return xs[0] if xs else None

    def const_dot(self, coefs, inputs: list[Expr], bias: int = 0) -> Expr:
        """sum_j coefs[j] * inputs[j] + bias, multiplier-free: the CSD digits of each coefficient
        are grouped by shift (bit planes), each plane is a narrow adder tree over the inputs, and
        the planes are added at their shifts."""
        planes: dict[int, list] = {}
        for c, x in zip(coefs, inputs):
            for k, d in csd(int(c)):
                planes.setdefault(k, []).append((x, d))
        parts = []
        for k in sorted(planes):
            s = self.tree(planes[k])
            parts.append((self.shifted(s, k, 1), 1))
        if bias:
            parts.append((self.const(bias), 1))
        if not parts:
            return self.const(0)
        return self.tree(parts)
