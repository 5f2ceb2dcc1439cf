"""The `parallel` architecture: one time step per clock, weights as constants in the logic.

Every constant product (W·h, U·x, the requant multipliers M'_W, M'_U, V·h) is an adder tree over
shifted inputs (`csd.Netlist.const_dot`), so the core needs no multiplier and no DSP. The
recurrence h -> h is one combinational path (W·h, requant, activation) closed by the h register;
y = V·h + c is computed from the h register into the output register one clock later.
"""

from __future__ import annotations

from qornn.export.artifact import signed_bits

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


def generate(art, module: str = "qornn_core") -> tuple[str, dict]:
    """Verilog-2005 of the parallel core and its statistics (adders)."""
    n, m, o = art.hidden_size, art.input_size, art.output_size
    kx, kh, ow = art.input_bits, art.act_bits, art.widths()["out"]
    hlo = art.h_min
    step = Netlist("s")
    hp = [step.wire(f"in_start ? {kh}'d0 : h[{j * kh + kh - 1}:{j * kh}]", hlo, art.h_max, name=f"hp{j}")
          for j in range(n)]
    xs = [step.wire(f"in_x[{j * kx + kx - 1}:{j * kx}]", -art.x_max, art.x_max, name=f"x{j}") for j in range(m)]
    act = []
    for i in range(n):
        aw = step.const_dot(art.W[i], hp)
        au = step.const_dot(art.U[i], xs)
        z = requant(step, art, aw, au)
        act.append(activation(step, art, z, int(art.b[i]), i))
    outn = Netlist("y")
    hr = [outn.wire(f"h[{j * kh + kh - 1}:{j * kh}]", hlo, art.h_max, name=f"hr{j}") for j in range(n)]
    ys = [outn.const_dot(art.V[i], hr, int(art.c[i])) for i in range(o)]
    every = art.output_mode == "every_step"
    body = [
        header(art, "parallel", module),
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
    return "\n".join(body) + "\n", {"adders": step.adders + outn.adders, "cycles_per_step": 1}
