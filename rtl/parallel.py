"""The `parallel` architecture: one time step per clock, weights as constants in the logic.

Every constant product (W·h, U·x, the requant multipliers M'_W, M'_U, V·h) is an adder graph over
shifted inputs, so the core needs no multiplier and no DSP. The matrix products W·h, U·x and V·h
are built by a solver (`rtl/cmvm.py`): `alkaid` (shared subexpressions across rows, each graph
proven equal to its matrix before use), or `csd` (per-row CSD digit trees, `csd.Netlist.const_dot`);
`auto` is alkaid with a per-product fallback to csd (and csd for products above 64 x 64 elements,
where alkaid's solve time grows steeply). The requant multipliers are always CSD. The
recurrence h -> h is one combinational path (W·h, requant, activation) closed by the h register;
y = V·h + c is computed from the h register into the output register one clock later.
"""

from __future__ import annotations

from qornn.errors import QornnError
from qornn.export.artifact import signed_bits

from . import cmvm
from .csd import Expr, Netlist, lit
from .stream import HANDSHAKE_DOC, header, ports


def activation(net: Netlist, art, z: Expr, b, i) -> str:
    """Verilog of hn<i> = sigma(z): modReLU sign(z)*clamp(|z|+b, 0, h_max) or ReLU clamp(z, 0, h_max).
    `b` is a constant (parallel core) or an Expr (the folded core's per-row bias table)."""
    kh, hmax = art.act_bits, art.h_max
    zn = f"{z.name}[{z.width - 1}]"
    if art.activation == "relu":
        w = max(z.width, kh + 1)
        return "\n".join([
            f"wire [{w - 1}:0] zx{i} = {net.ext(z, w)};",
            f"wire [{kh - 1}:0] hn{i} = {zn} ? {kh}'d0 : (zx{i} > {lit(hmax, w)}) ? {lit(hmax, kh)} : zx{i}[{kh - 1}:0];",
        ])
    # sign(z)*clamp(|z|+b, 0, h_max) = clamp(z+b, 0, h_max) for z > 0 and clamp(z-b, -h_max, 0) for
    # z < 0: two adders side by side instead of negate -> add -> negate in series (shorter h -> h path)
    blo, bhi = (b, b) if isinstance(b, int) else (b.lo, b.hi)
    w = max(signed_bits(min(z.lo + blo, z.lo - bhi), max(z.hi + bhi, z.hi - blo)), kh + 1)
    bias = lit(b, w) if isinstance(b, int) else net.ext(b, w)
    top = 1 << w
    return "\n".join([
        f"wire [{w - 1}:0] zx{i} = {net.ext(z, w)};",
        f"wire [{w - 1}:0] ap{i} = zx{i} + {bias};",
        f"wire [{w - 1}:0] an{i} = zx{i} - {bias};",
        f"wire [{kh - 1}:0] cp{i} = ap{i}[{w - 1}] ? {kh}'d0 : (ap{i} > {lit(hmax, w)}) ? {lit(hmax, kh)} : ap{i}[{kh - 1}:0];",
        f"wire [{kh - 1}:0] cn{i} = !an{i}[{w - 1}] ? {kh}'d0 : (an{i} < {w}'d{top - hmax}) ? {lit(-hmax, kh)} : an{i}[{kh - 1}:0];",
        f"wire [{kh - 1}:0] hn{i} = (zx{i} == {w}'d0) ? {kh}'d0 : {zn} ? cn{i} : cp{i};",
    ])


def requant(net: Netlist, art, aw: Expr, au: Expr) -> Expr:
    """z = (M'_W aW + M'_U aU + 2^(S-1)) >> S with the multipliers as shift-add (CSD) trees."""
    S = art.shift
    half = (1 << S) >> 1
    p = net.const_dot([art.mult_w, art.mult_u], [aw, au], half)
    if S == 0:
        return p
    lo, hi = p.lo >> S, p.hi >> S
    if S >= p.width:
        return net.wire(f"{{1{{{p.name}[{p.width - 1}]}}}}", lo, hi)
    return net.wire(f"{p.name}[{p.width - 1}:{S}]", lo, hi)


# `auto` asks alkaid only up to this many matrix elements: its solve time grows steeply with the
# size (about 19 s for a 64 x 64 4-bit matrix on one core here); larger products use csd at once.
# `--solver alkaid` has no limit.
AUTO_MAX_ELEMENTS = 64 * 64


def matrix_products(net: Netlist, K, inputs: list[Expr], solver: str, hard_dc: int, who: str,
                    used: dict) -> list[Expr]:
    """K . inputs as wires of net, by `solver` ('auto', 'alkaid' or 'csd'); records what was used."""
    rows = [[int(v) for v in row] for row in K]
    if solver == "auto" and len(rows) * len(inputs) > AUTO_MAX_ELEMENTS:
        used[who] = f"csd (auto: {len(rows)}x{len(inputs)} is above alkaid's {AUTO_MAX_ELEMENTS}-element limit)"
    elif solver in ("auto", "alkaid"):
        g = cmvm.Graph([(x.lo, x.hi) for x in inputs])
        try:
            terms = cmvm.product(g, rows, [g.input(j) for j in range(len(inputs))], "alkaid", hard_dc, who)
        except (cmvm.SolverMismatch, cmvm.SolverMissing) as exc:
            if solver == "alkaid":
                raise
            used[who] = f"csd (alkaid refused: {exc})"
        else:
            a0 = net.adders
            out = [net.const(0) if e is None else e for e in cmvm.emit(net, g, inputs, terms)]
            used[who] = "alkaid"
            used.setdefault("adders", {})[who] = net.adders - a0
            used.setdefault("depth", {})[who] = g.depth(terms)
            return out
    else:
        used[who] = "csd"
    a0 = net.adders
    out = [net.const_dot(row, inputs) for row in rows]
    used.setdefault("adders", {})[who] = net.adders - a0
    return out


def generate(art, module: str = "qornn_core", solver: str = "auto", hard_dc: int = -1) -> tuple[str, dict]:
    """Verilog-2005 of the parallel core and its statistics (adders, the solver of each product)."""
    if solver not in cmvm.SOLVERS:
        raise QornnError(f"unknown solver {solver!r}; choose one of {', '.join(cmvm.SOLVERS)}")
    used: dict = {"requested": solver, "hard_dc": int(hard_dc)}
    if solver != "csd":
        ok, ver = cmvm.solver_available()
        used["alkaid"] = ver if ok else None
    n, m, o = art.hidden_size, art.input_size, art.output_size
    kx, kh, ow = art.input_bits, art.act_bits, art.widths()["out"]
    hlo = art.h_min
    step = Netlist("s")
    # W.h is taken from the h register and the start beat's h = 0 applied after it (W.0 = 0): the
    # largest product then depends on no input port, so a simulator evaluates it once per clock
    # (after the edge that loads h), not again whenever an input changes
    hp = [step.wire(f"h[{j * kh + kh - 1}:{j * kh}]", hlo, art.h_max, name=f"hp{j}") for j in range(n)]
    xs = [step.wire(f"in_x[{j * kx + kx - 1}:{j * kx}]", -art.x_max, art.x_max, name=f"x{j}") for j in range(m)]
    act = []
    if solver == "csd":   # row by row, as before the solvers
        used |= {"W": "csd", "U": "csd"}
        for i in range(n):
            aw = _start_zero(step, step.const_dot(art.W[i], hp))
            au = step.const_dot(art.U[i], xs)
            z = requant(step, art, aw, au)
            act.append(activation(step, art, z, int(art.b[i]), i))
    else:
        aws = [_start_zero(step, a) for a in matrix_products(step, art.W, hp, solver, hard_dc, "W", used)]
        aus = matrix_products(step, art.U, xs, solver, hard_dc, "U", used)
        for i in range(n):
            z = requant(step, art, aws[i], aus[i])
            act.append(activation(step, art, z, int(art.b[i]), i))
    outn = Netlist("y")
    hr = [outn.wire(f"h[{j * kh + kh - 1}:{j * kh}]", hlo, art.h_max, name=f"hr{j}") for j in range(n)]
    if solver == "csd":   # the CSD trees take the bias into their sum
        ys = [outn.const_dot(art.V[i], hr, int(art.c[i])) for i in range(o)]
        used["V"] = "csd"
    else:
        vs = matrix_products(outn, art.V, hr, solver, hard_dc, "V", used)
        ys = [outn.add(v, outn.const(int(art.c[i]))) if int(art.c[i]) else v for i, v in enumerate(vs)]
    every = art.output_mode == "every_step"
    body = [
        header(art, "parallel", module),
        f"// constant products W.h U.x V.h: {_solver_line(used)}",
        f"module {module} (",
        ports(art),
        ");",
        f"// ---- one step: h_t = sigma(requant(W h_(t-1) + U x_t)), h_(t-1) = 0 on a start beat",
        f"reg [{n * kh - 1}:0] h;",
        *step.lines,
        *act,
        f"wire [{n * kh - 1}:0] h_next = {{{', '.join(f'hn{i}' for i in reversed(range(n)))}}};",
        f"// ---- output: y = V h + c from the h register",
        *outn.lines,
        f"wire [{o * ow - 1}:0] y_next = {{{', '.join(outn.ext(y, ow) for y in reversed(ys))}}};",
        "// ---- stream control (docs/hardware.md, 'Stream protocol')",
        "reg fresh;        // h holds a step whose output beat is still to be made",
        "reg fresh_last;",
        "wire can_move = !out_valid || out_ready;",
        "assign in_ready = !fresh || can_move;",
        "wire accept = in_valid && in_ready;",
        f"wire emit = {'1' if every else 'in_last'};",
        "always @(posedge clk) begin",
        "    if (rst) begin",
        "        h <= 0; fresh <= 1'b0; fresh_last <= 1'b0; out_valid <= 1'b0; out_last <= 1'b0;",
        "        out_y <= 0; dbg_h_valid <= 1'b0;",
        "    end else begin",
        "        dbg_h_valid <= accept;",
        "        if (accept) h <= h_next;",
        "        if (fresh && can_move) begin",
        "            out_y <= y_next; out_last <= fresh_last; out_valid <= 1'b1;",
        "        end else if (out_ready) begin",
        "            out_valid <= 1'b0;",
        "        end",
        "        if (accept) begin",
        "            fresh <= emit; fresh_last <= in_last;",
        "        end else if (fresh && can_move) begin",
        "            fresh <= 1'b0;",
        "        end",
        "    end",
        "end",
        "assign dbg_h = h;",
        "endmodule",
    ]
    return "\n".join(body) + "\n", {"adders": step.adders + outn.adders, "cycles_per_step": 1, "solver": used}


def _start_zero(net: Netlist, aw: Expr) -> Expr:
    """W.h_(t-1) with h_(t-1) = 0 on a start beat: 0 when in_start (0 lies in aw's bounds: h = 0 is a state)."""
    lo, hi = min(aw.lo, 0), max(aw.hi, 0)
    return net.wire(f"in_start ? {lit(0, aw.width)} : {aw.name}", lo, hi)


def _solver_line(used: dict) -> str:
    parts = [f"{k} {used[k]}" for k in ("W", "U", "V")]
    extra = f", alkaid {used['alkaid']} hard_dc {used['hard_dc']}" if used.get("alkaid") else ""
    return f"solver {used['requested']} ({'; '.join(parts)}{extra})"
