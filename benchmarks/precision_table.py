"""Per-tensor bit allocations of one task: integer metric, footprint (raw, Huffman) and energy.

Trains one copy-task QORNN per allocation (STE-Björck, weights at exactly those widths; the hidden
state calibrated after training, or trained in with hidden-state QAT), exports it,
scores the integer simulator on the held-out data, and writes the table into docs/results.md
("## Precision planning") with the command line of every row. Resumable: finished rows are kept
in docs/results/precision/rows.json and skipped.

    .venv/bin/python benchmarks/precision_table.py [--steps 1000] [--length 60] [--hidden 64]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))

from _docsection import write_section  # noqa: E402

# name: (training options of the weights, hidden-state bits)
ALLOCATIONS = {
    "W4 U4 V8 h8": ([], 8),
    "W4 U4 V4 h8": (["--output-bits", "4"], 8),
    "W3 U3 V8 h8": (["--weight-bits", "3"], 8),
    "W ternary, U3, V8, h6": (["--weight-bits", "3", "--recurrent-bits", "2", "--narrow-range"], 6),
    "W5 U2 V8 h8": (["--weight-bits", "5", "--input-weight-bits", "2"], 8),
    "W4 U4 V8 h6": ([], 6),
}
# how the hidden state gets its width: calibrated after training, or trained in (hidden-state QAT)
MODES = {"calibrated": lambda h: ([], ["--act-bits", str(h)]), "QAT": lambda h: (["--act-bits", str(h)], [])}


NOTES = """Reading it (one seed per row; differences of a few points are noise):

- The recurrent matrix needs its bits, the input matrix does not: 2-bit U beside 5-bit W is the
  most accurate allocation, while a ternary W (0.45-0.64 bits of entropy per weight after Huffman
  coding) does not learn the copy task at this budget, calibrated or QAT (chance 0.125).
- Training the hidden state in helps most where its width is the bottleneck: a 6-bit hidden
  state goes from 0.44 (calibrated) to 0.65 (QAT); 3-bit weights and a 4-bit V gain too.
- h SQNR compares the integer hidden trajectory with the float one of the same quantized weights.
  A QAT model is trained for its integer trajectory, not to stay near the float one, so a low
  SQNR there (the ternary QAT row) says little about its accuracy; for calibrated models it is
  the quantity `qornn export --target-sqnr` controls.
- The energy estimate follows the bits of W and h (the W h products and the SRAM reads dominate):
  10-18x below float32 for every allocation here, and 0.62x of the W4/h8 figure with ternary W.
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--length", type=int, default=60)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--out", default=str(ROOT / "docs" / "results" / "precision"))
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()

    from qornn.cli import main as qornn
    from qornn.export.artifact import load_artifact
    from qornn.export.costs import energy_per_step, footprint
    from qornn.export.evaluate import evaluate_artifact
    from qornn.train.tasks import make_task

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows_path = out / "rows.json"
    rows = json.loads(rows_path.read_text()) if rows_path.exists() else {}
    task = make_task("copy", length=args.length)
    rows = {(k if " | " in k else f"{k} | calibrated"): v for k, v in rows.items()}  # rows of older runs
    cells = [(name, mode) for name in ALLOCATIONS for mode in MODES]
    for name, mode in cells:
        key = f"{name} | {mode}"
        if key in rows:
            continue
        train_opts, export_opts = MODES[mode](ALLOCATIONS[name][1])
        train_opts = ALLOCATIONS[name][0] + train_opts
        work = ROOT / "runs" / "precision"          # gitignored: weights are not committed
        run, art_dir = work / key.replace(" ", "_").replace(",", "").replace("|", ""), work / "art"
        train_cmd = ["train", "--task", "copy", "--length", str(args.length), "--hidden", str(args.hidden),
                     "--steps", str(args.steps), "--lr", str(args.lr), *train_opts, "--out", str(run), "--force"]
        export_cmd = ["export", str(run), *export_opts, "--out", str(art_dir), "--force"]
        print(f"== {key}: qornn {' '.join(train_cmd)}", flush=True)
        if qornn(train_cmd) or qornn(export_cmd):
            return 1
        art = load_artifact(art_dir)
        fp, en = footprint(art), energy_per_step(art)
        metric = evaluate_artifact(art, task)["accuracy"]
        rows[key] = {"train": "qornn " + " ".join(train_cmd[:-3]), "export": " ".join(export_opts),
                      "accuracy": metric, "raw_bytes": fp["integer_bytes"], "huffman_bytes": fp["huffman_bytes"],
                      "weight_entropy": {k: fp["tensors"][k]["entropy_bits_per_element"] for k in ("W", "U", "V")},
                      "pj_sram": en["integer_pj"], "pj_float32": en["float32_pj"],
                      "sqnr_h": art.provenance["sqnr_db"]["h"]}
        rows_path.write_text(json.dumps(rows, indent=2) + "\n")
    lines = ["## Precision planning: per-tensor widths", "",
             f"One copy task (length {args.length}, hidden {args.hidden}, {args.steps} steps of STE-Björck, "
             f"lr {args.lr}, seed 0) per allocation, its weights trained at exactly those widths; the hidden "
             "state either calibrated after training (max|h|, `qornn export --act-bits`) or trained in "
             "(hidden-state QAT, `qornn train --act-bits`, LSQ scale). Integer accuracy: the exported artifact "
             "in the integer simulator on 4 x 128 held-out sequences (chance 0.125). h SQNR: the integer hidden "
             "trajectory against the float hidden state of the same quantized weights. Footprint: raw bytes of "
             "every integer tensor, and the bytes of a Huffman code built on each tensor's own code histogram; "
             "entropy in bits per weight for W / U / V. Energy: an *estimate* per time step from operation "
             "counts and Horowitz's 45 nm figures (weights read from SRAM; export/costs.py), beside the same "
             "network in float32. Produced by `benchmarks/precision_table.py`; each row's command lines below.", "",
             "| allocation | hidden state | integer accuracy | h SQNR (dB) | raw B | Huffman B "
             "| entropy W / U / V (bits) | pJ/step (int) | pJ/step (float32) |",
             "|---|---|---:|---:|---:|---:|---|---:|---:|"]
    order = [f"{n} | {m}" for n in ALLOCATIONS for m in MODES]
    for key in sorted(rows, key=lambda k: order.index(k) if k in order else len(order)):
        r, (name, mode) = rows[key], key.split(" | ")
        e = r["weight_entropy"]
        lines.append(f"| {name} | {mode} | {r['accuracy']:.3f} | {r['sqnr_h']} | {r['raw_bytes']} | "
                     f"{r['huffman_bytes']} | {e['W']:.2f} / {e['U']:.2f} / {e['V']:.2f} | {r['pj_sram']:.0f} | "
                     f"{r['pj_float32']:.0f} |")
    lines += ["", "```"] + [f"{r['train']} --out RUN && qornn export RUN {r['export']} --out ART    # {k}".replace("  ", " ")
                              for k, r in rows.items()] + ["```", ""]
    lines += [NOTES, ""]
    section = "\n".join(lines)
    print(section)
    if not args.no_write:
        write_section(ROOT / "docs" / "results.md", "Precision planning: per-tensor widths", section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
