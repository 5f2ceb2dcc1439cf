"""The parallel core's constant products by solver: CSD trees against alkaid's shared adder graphs
(rtl/cmvm.py), through yosys + nextpnr on iCE40 HX8K and ECP5-85F; a table into docs/hardware.md.

The artifact is the sweep's goal cell (benchmarks/bench_rtl.py `artifact(16, 4, po2)`: hidden 16,
inputs 10, outputs 9, 4-bit W/U, 8-bit x, h, V). Each (solver, target) cell is written to
OUT/<cell>/<target>/ and synthesized with `qornn.rtl.synth.synthesize`; a cell whose report.json
exists is read back, not run again (resumable). Every figure is the tools' own.

    nice -n 10 python benchmarks/bench_rtl_solver.py [--out benchmarks/rtl_sweep/solver] [--po2 | --no-po2]
        [--cells csd,alkaid,alkaid_dc0] [--targets ice40-hx8k,ecp5-85k] [--docs]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
CELLS = {"csd": ("csd", -1), "alkaid": ("alkaid", -1), "alkaid_dc0": ("alkaid", 0)}
TARGETS = ("ice40-hx8k", "ecp5-85k")


def run(out: Path, cell: str, target: str, po2: bool, timeout: float) -> dict:
    from bench_rtl import artifact

    from qornn.rtl import read_meta, write_rtl
    from qornn.rtl.synth import synthesize

    d = out / f"n16_w4{'_po2' if po2 else ''}_{cell}" / target
    if (d / "report.json").is_file():
        r = json.loads((d / "report.json").read_text())
    else:
        solver, dc = CELLS[cell]
        write_rtl(artifact(16, 4, po2), d, target=target, force=True, solver=solver, solver_dc=dc)
        r = synthesize(d, target, timeout=timeout)
    st = read_meta(d)["stats"]
    return r | {"cell": cell, "adders": st["adders"], "depth": st["solver"].get("depth", {})}


def table(rows) -> str:
    lines = ["| solver | adders (netlist) | graph depth W/U/V | target | LUT | carry | FF | fits | Fmax MHz | yosys s | nextpnr s |",
             "|---|---:|---|---|---:|---:|---:|---|---:|---:|---:|"]
    for r in rows:
        dep = "/".join(str(r["depth"].get(k, "-")) for k in "WUV") if r["depth"] else "-"
        lines.append(f"| {r['cell']} | {r['adders']} | {dep} | {r.get('target', '')} | {r.get('LUT', '')} | "
                     f"{r.get('carry', '')} | {r.get('FF', '')} | {r.get('fits', '')} | {r.get('fmax_mhz', '') or '-'} | "
                     f"{r.get('yosys_seconds', '')} | {r.get('nextpnr_seconds', '') or '-'} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(HERE / "rtl_sweep" / "solver"))
    ap.add_argument("--po2", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--cells", default="csd,alkaid,alkaid_dc0")
    ap.add_argument("--targets", default=",".join(TARGETS))
    ap.add_argument("--timeout", type=float, default=2400)
    args = ap.parse_args()
    rows = []
    for cell in args.cells.split(","):
        for target in args.targets.split(","):
            rows.append(run(Path(args.out), cell, target, args.po2, args.timeout))
            print(table(rows[-1:]).splitlines()[-1], flush=True)
    print(table(rows))


if __name__ == "__main__":
    main()
