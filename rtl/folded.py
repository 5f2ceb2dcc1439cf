"""The `folded` architecture: P multiply-accumulate lanes, weights in a ROM (block RAM).

Per step the lanes walk the rows of [W | U] in groups of P (lane l takes row r*P + l), one
column per clock: each clock one ROM word (P weights) is read and one element of v = [h; x] is
broadcast to every lane, so a step takes ceil(n/P)*(n+m) clocks plus 4. At the end of each row
the lane requantizes (shift-add of M'_W, M'_U) and activates into h_next; at the end of the step
h_next becomes h. A separate output unit (P_o lanes, its own ROM of V) computes y = V h + c from h
while the lanes already work on the next step; P_o is the fewest lanes that keep up with them.
The ROMs are `reg` arrays with initial contents and a registered read, which yosys maps to
iCE40 EBR / ECP5 / Xilinx block RAM.
"""

from __future__ import annotations

import math

from qornn.export.artifact import signed_bits

from .csd import Expr, Netlist, lit
from .parallel import activation, requant
from .stream import header, ports


def _clog2(x: int) -> int:
    return max(1, (x - 1).bit_length())


def _rom(name: str, width: int, words: list[int]) -> list[str]:
    lines = [f"reg [{width - 1}:0] {name} [0:{len(words) - 1}];", "initial begin"]
    lines += [f"    {name}[{a}] = {width}'h{w:x};" for a, w in enumerate(words)]
    return lines + ["end"]


def _pack(vals, width: int) -> int:
    word = 0
    for l, v in enumerate(vals):
        word |= (int(v) % (1 << width)) << (l * width)
    return word


def _table(name: str, sel: str, width: int, values: list[int]) -> list[str]:
    """A constant table as a combinational case statement (LUTs)."""
    lines = [f"reg [{width - 1}:0] {name};", "always @* begin", f"    case ({sel})"]
    lines += [f"        {k}: {name} = {lit(v, width)};" for k, v in enumerate(values)]
    return lines + [f"        default: {name} = {width}'d0;", "    endcase", "end"]


def generate(art, lanes: int, module: str = "qornn_core") -> tuple[str, dict]:
    n, m, o = art.hidden_size, art.input_size, art.output_size
    kx, kh = art.input_bits, art.act_bits
    wd = art.widths()
    ow = wd["out"]
    P = lanes
    R = math.ceil(n / P)                       # row groups
    C = n + m                                  # columns of [W | U]
    step_cycles = R * C + 4
    Po = next(p for p in range(1, o + 1) if math.ceil(o / p) * n <= R * C)
    Ro = math.ceil(o / Po)
    out_cycles = Ro * n + 4
    WB = max(art.recurrent_bits, art.input_weight_bits, 2)
    VB = max(art.output_bits, 2)
    KV = max(kh, kx)
    every = art.output_mode == "every_step"
    bounds = art.bounds()

    wrom = []
    for r in range(R):
        for j in range(C):
            vals = []
            for l in range(P):
                i = r * P + l
                vals.append(0 if i >= n else (art.W[i, j] if j < n else art.U[i, j - n]))
            wrom.append(_pack(vals, WB))
    vrom = []
    for r in range(Ro):
        for j in range(n):
            vrom.append(_pack([art.V[r * Po + l, j] if r * Po + l < o else 0 for l in range(Po)], VB))

    L = []
    L += [header(art, f"folded ({P} lanes, {Po} output lanes)", module), f"module {module} (", ports(art), ");"]
    L += [f"// {R} row groups x {C} columns: {step_cycles} clocks per step; output unit {out_cycles} clocks",
          f"reg [{n * kh - 1}:0] h;       // h_(t-1), read by the lanes and the output unit",
          f"reg [{n * kh - 1}:0] h_next;  // h_t, written row by row",
          f"reg [{m * kx - 1}:0] x_reg;",
          "reg start_reg, last_reg;",
          "localparam IDLE = 2'd0, RUN = 2'd1, DRAIN = 2'd2;",
          "reg [1:0] state;",
          f"reg [{_clog2(R * C + 1) - 1}:0] addr;",
          f"reg [{_clog2(C + 1) - 1}:0] col;",
          f"reg [{_clog2(R + 1) - 1}:0] grp;",
          "// ---- weight ROM: word r*C + j holds column j of rows r*P .. r*P+P-1 (W for j < n, U after)"]
    L += _rom("wrom", P * WB, wrom)
    L += [f"reg [{P * WB - 1}:0] wq;",
          "always @(posedge clk) wq <= wrom[addr];",
          "// ---- the broadcast operand v_j = [h_(t-1) (0 on a start beat); x_t]",
          f"reg signed [{KV - 1}:0] v;", "always @* begin", "    case (col)"]
    for j in range(n):
        L.append(f"        {j}: v = start_reg ? {KV}'d0 : {{{{{KV - kh}{{h[{j * kh + kh - 1}]}}}}, h[{j * kh + kh - 1}:{j * kh}]}};"
                 if KV > kh else f"        {j}: v = start_reg ? {KV}'d0 : h[{j * kh + kh - 1}:{j * kh}];")
    for j in range(m):
        lo = j * kx
        L.append(f"        {n + j}: v = {{{{{KV - kx}{{x_reg[{lo + kx - 1}]}}}}, x_reg[{lo + kx - 1}:{lo}]}};"
                 if KV > kx else f"        {n + j}: v = x_reg[{lo + kx - 1}:{lo}];")
    L += [f"        default: v = {KV}'d0;", "    endcase", "end",
          f"reg signed [{KV - 1}:0] v_d;",
          "reg val_d, first_d, ufirst_d, isw_d, last_d;",
          f"reg [{_clog2(R + 1) - 1}:0] grp_d, wb_grp;",
          "reg wb;   // the accumulators hold finished rows of group wb_grp"]
    net = Netlist("q")
    for l in range(P):
        L += [f"wire signed [{WB + KV - 1}:0] prod{l} = $signed(wq[{l * WB + WB - 1}:{l * WB}]) * v_d;",
              f"reg signed [{wd['acc_w'] - 1}:0] accw{l};",
              f"reg signed [{wd['acc_u'] - 1}:0] accu{l};"]
        rows = [r * P + l for r in range(R) if r * P + l < n]
        bvals = [int(art.b[i]) for i in rows]
        blo, bhi = min(bvals + [0]), max(bvals + [0])
        bw = signed_bits(blo, bhi)
        L += _table(f"bias{l}", "wb_grp", bw, bvals)
        aw = net.wire(f"accw{l}", -bounds["acc_w"], bounds["acc_w"])
        au = net.wire(f"accu{l}", -bounds["acc_u"], bounds["acc_u"])
        z = requant(net, art, aw, au)
        L += net.lines
        net.lines = []
        L.append(activation(net, art, z, Expr(f"bias{l}", bw, blo, bhi), f"{l}"))
    L += ["// ---- output unit: y = V h + c, P_o lanes over the rows of V",
          f"reg [{_clog2(Ro * n + 1) - 1}:0] oaddr;",
          f"reg [{_clog2(n + 1) - 1}:0] ocol;",
          f"reg [{_clog2(Ro + 1) - 1}:0] ogrp, ogrp_d;",
          "reg obusy, oval_d, ofirst_d, olast_d, y_pending, y_last;"]
    L += _rom("vrom", Po * VB, vrom)
    L += [f"reg [{Po * VB - 1}:0] vq;", "always @(posedge clk) vq <= vrom[oaddr];",
          f"reg signed [{kh - 1}:0] hv, hv_d;", "always @* begin", "    case (ocol)"]
    L += [f"        {j}: hv = h[{j * kh + kh - 1}:{j * kh}];" for j in range(n)]
    L += [f"        default: hv = {kh}'d0;", "    endcase", "end"]
    for l in range(Po):
        rows = [r * Po + l for r in range(Ro) if r * Po + l < o]
        cvals = [int(art.c[i]) for i in rows]
        L += [f"wire signed [{VB + kh - 1}:0] oprod{l} = $signed(vq[{l * VB + VB - 1}:{l * VB}]) * hv_d;",
              f"reg signed [{ow - 1}:0] yacc{l};"]
        L += _table(f"cb{l}", "ogrp_d", ow, cvals)
        L.append(f"wire signed [{ow - 1}:0] ysum{l} = (ofirst_d ? {ow}'sd0 : yacc{l}) + oprod{l};")
    hwrites = [f"            if (wb_grp == {i // P}) h_next[{i * kh + kh - 1}:{i * kh}] <= hn{i % P};" for i in range(n)]
    ywrites = [f"            if (ogrp_d == {i // Po}) out_y[{i * ow + ow - 1}:{i * ow}] <= ysum{i % Po} + cb{i % Po};"
               for i in range(o)]
    emit = "1'b1" if every else "last_reg"
    L += ["// ---- control (docs/hardware.md, 'Stream protocol')",
          "assign in_ready = (state == IDLE);",
          "wire accept = in_valid && in_ready;",
          "wire run = (state == RUN);",
          "wire swap = (state == DRAIN) && !val_d && !wb && !y_pending && !obusy;",
          "wire ostart = y_pending && !obusy && !out_valid;",
          "always @(posedge clk) begin",
          "    if (rst) begin",
          "        state <= IDLE; h <= 0; h_next <= 0; x_reg <= 0; start_reg <= 1'b0; last_reg <= 1'b0;",
          "        addr <= 0; col <= 0; grp <= 0; val_d <= 1'b0; wb <= 1'b0; dbg_h_valid <= 1'b0;",
          "        obusy <= 1'b0; oval_d <= 1'b0; y_pending <= 1'b0; y_last <= 1'b0;",
          "        out_valid <= 1'b0; out_last <= 1'b0; out_y <= 0; oaddr <= 0; ocol <= 0; ogrp <= 0;",
          "    end else begin",
          "        dbg_h_valid <= swap;",
          "        if (accept) begin",
          "            x_reg <= in_x; start_reg <= in_start; last_reg <= in_last;",
          "            addr <= 0; col <= 0; grp <= 0; state <= RUN;",
          "        end",
          "        if (run) begin",
          "            addr <= addr + 1'b1;",
          f"            if (col == {C - 1}) begin",
          "                col <= 0; grp <= grp + 1'b1;",
          f"                if (grp == {R - 1}) state <= DRAIN;",
          "            end else col <= col + 1'b1;",
          "        end",
          "        // pipeline stage: ROM word and operand arrive together",
          "        val_d <= run; v_d <= v; grp_d <= grp;",
          f"        first_d <= (col == 0); ufirst_d <= (col == {n}); isw_d <= (col < {n}); last_d <= (col == {C - 1});",
          "        if (val_d) begin",
          *[f"            if (isw_d) accw{l} <= (first_d ? {wd['acc_w']}'sd0 : accw{l}) + prod{l};\n"
            f"            else accu{l} <= (ufirst_d ? {wd['acc_u']}'sd0 : accu{l}) + prod{l};" for l in range(P)],
          "        end",
          "        wb <= val_d && last_d; wb_grp <= grp_d;",
          "        if (wb) begin",
          *hwrites,
          "        end",
          "        if (swap) begin",
          "            h <= h_next; state <= IDLE;",
          f"            if ({emit}) begin y_pending <= 1'b1; y_last <= last_reg; end",
          "        end",
          "        // output unit",
          "        if (ostart) begin",
          "            obusy <= 1'b1; y_pending <= 1'b0; oaddr <= 0; ocol <= 0; ogrp <= 0;",
          "        end",
          "        if (obusy) begin",
          "            oaddr <= oaddr + 1'b1;",
          f"            if (ocol == {n - 1}) begin",
          "                ocol <= 0; ogrp <= ogrp + 1'b1;",
          f"                if (ogrp == {Ro - 1}) obusy <= 1'b0;",
          "            end else ocol <= ocol + 1'b1;",
          "        end",
          f"        oval_d <= obusy; hv_d <= hv; ogrp_d <= ogrp; ofirst_d <= (ocol == 0); olast_d <= (ocol == {n - 1});",
          "        if (oval_d) begin",
          *[f"            yacc{l} <= ysum{l};" for l in range(Po)],
          "        end",
          "        if (oval_d && olast_d) begin",
          *ywrites,
          "        end",
          f"        if (oval_d && olast_d && ogrp_d == {Ro - 1}) begin",
          "            out_valid <= 1'b1; out_last <= y_last;",
          "        end else if (out_valid && out_ready) begin",
          "            out_valid <= 1'b0;",
          "        end",
          "    end",
          "end",
          "assign dbg_h = h;",
          "endmodule"]
    stats = {"lanes": P, "output_lanes": Po, "cycles_per_step": step_cycles,
             "max_cycles_per_step": step_cycles + out_cycles, "rom_bits": P * WB * R * C + Po * VB * Ro * n,
             "multipliers": P + Po}
    return "\n".join(L) + "\n", stats
