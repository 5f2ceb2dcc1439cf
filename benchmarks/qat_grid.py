"""Integer-aware training grid (issue 10): fake-quantized vs integer, per training option.

Each cell trains one QORNN with `qornn.train.trainer.train`, exports it with
`qornn.export.exporter.export_model` (8-bit hidden state) and scores, on the same held-out data:

  fq       the eval-mode PyTorch forward (what training sees: quantized weights, and with hidden-state
           QAT the quantized hidden state and input too)
  integer  the exported artifact run by the NumPy integer simulator (the golden model)
  agree    fraction of held-out sequences on which the two predict the same class at every output
           (pMNIST: the last step; copy: every step; a hidden-state QAT model's eval forward reads its
           logits off the output codes, so even exact ties of two classes break alike)

plus sigma_max of the exported q(W) (codes x s_W, float64 SVD), s_h, the requant multipliers
M_W / M_U, and seconds. Cell options: method, weight bits, hidden-state QAT (--act-bits 8, LSQ
hidden scale) or post-hoc calibration, --spectral-scale, --weight-scale max|lsq|po2.

Results go to docs/results/qat/<name>/: results.csv (one row per cell; a cell already there is
skipped, so a killed grid resumes by running the same command), results.md and gap.png; the run
directories under runs/qat/ (not committed).

    nice -n 10 .venv/bin/python benchmarks/qat_grid.py --grid pmnist4    # see GRIDS below
"""

from __future__ import annotations

import argparse
import csv
import io
import itertools
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "results" / "qat"
METHODS = ("ste-bjorck", "ste-projunn")
SCALES = ("max", "lsq", "po2")

# task settings: the budgets of docs/results.md's existing tables
TASKS = {
    "pmnist": dict(task="pmnist", options={}, hidden=64, steps=500, lr=2e-3, eval_batches=4),
    "copy": dict(task="copy", options={"length": 60}, hidden=64, steps=1000, lr=2e-3, eval_batches=4),
}


def full(bits):  # every combination: qat x spectral x scale
    return [(m, k, q, sp, sc) for m in METHODS for k in bits for q in (False, True) for sp in (False, True)
            for sc in SCALES]


def best(bits):  # the baseline (today's pipeline, 8-bit hidden state) and hidden-state QAT with each weight scale
    return [(m, k, q, sp, sc) for m in METHODS for k in bits
            for (q, sp, sc) in ((False, False, "max"), (True, False, "max"), (True, False, "lsq"), (True, False, "po2"))]


def spectral(bits):  # --spectral-scale with max scales, calibrated and QAT
    return [(m, k, q, True, "max") for m in METHODS for k in bits for q in (False, True)]


GRIDS = {
    "pmnist4": ("pmnist", full([4])),
    "pmnist68": ("pmnist", best([6, 8]) + spectral([6, 8])
                 + [(m, k, False, False, sc) for m in METHODS for k in (6, 8) for sc in ("lsq", "po2")]),
    "copy": ("copy", full([4, 5])),
}
SECTION = "Integer-aware training: hidden-state QAT and weight scales"
FIELDS = ["task", "method", "weight_bits", "hidden_qat", "spectral", "weight_scale", "act_bits", "hidden", "steps",
          "seed", "float", "fq", "integer", "gap", "agree", "sigma_max", "s_h", "m_w", "m_u", "scale_mode", "seconds"]


def key(r) -> tuple:
    return (r["method"], int(r["weight_bits"]), str(r["hidden_qat"]) == "True", str(r["spectral"]) == "True",
            r["weight_scale"])


def run_cell(t: dict, method: str, bits: int, qat: bool, spectral: bool, scale: str, run_dir: Path,
             seed: int = 0, act_bits: int = 8) -> dict:
    import torch

    from qornn.train import QORNN
    from qornn.train.tasks import make_task
    from qornn.train.trainer import train

    task = make_task(t["task"], **t["options"])
    torch.manual_seed(seed)
    model = QORNN(task.input_size, t["hidden"], task.output_size, weight_bits=bits, method=method,
                  output_mode=task.output_mode, act_bits=act_bits if qat else None, weight_scale=scale,
                  spectral_scale=spectral)
    t0 = time.time()
    train(model, task, t["steps"], run_dir, lr=t["lr"], seed=seed, force=True, progress=False)
    row = {"task": t["task"], "method": method, "weight_bits": bits, "hidden_qat": qat, "spectral": spectral,
           "weight_scale": scale, "act_bits": act_bits, "hidden": t["hidden"], "steps": t["steps"], "seed": seed}
    return row | score(model.cpu().eval(), task, t["eval_batches"], act_bits) | {"seconds": round(time.time() - t0, 1)}


def score(model, task, eval_batches, act_bits: int = 8) -> dict:
    """Export (8-bit hidden state: trained, or calibrated) and score both executors on the same data."""
    import numpy as np
    import torch

    from qornn.export.exporter import export_model
    from qornn.export.simulator import simulate
    from qornn.train.tasks import eval_data
    from qornn.train.trainer import MetricMean, evaluate

    art, _ = export_model(model, task, act_bits=act_bits)
    fq, integer, agree, n = MetricMean(), MetricMean(), 0, 0
    with torch.no_grad():
        for x, y in eval_data(task, eval_batches):
            logits = model(x)
            fq.add(task.metrics(logits, y), len(y))
            res = simulate(art, x.numpy().astype(np.float64), return_hidden=False)
            integer.add(task.metrics(torch.from_numpy(res.output_real), y), len(y))
            same = logits.argmax(-1).numpy() == res.output_real.argmax(-1)
            agree += int(same.reshape(len(y), -1).all(1).sum())
            n += len(y)
    m = task.metric
    w = torch.from_numpy(art.W.astype(np.float64)) * art.w_scale
    f, i = fq.result()[m], integer.result()[m]
    return {"float": evaluate(model, task, eval_batches, quantized=False)[m], "fq": f, "integer": i,
            "gap": i - f, "agree": agree / n, "sigma_max": float(torch.linalg.matrix_norm(w, ord=2)),
            "s_h": art.hidden_scale, "m_w": art.m_w, "m_u": art.m_u, "scale_mode": art.scale_mode}


def cell_name(method, bits, qat, spectral, scale) -> str:
    return f"{method}-w{bits}-{'qat' if qat else 'cal'}-{'spec' if spectral else 'nospec'}-{scale}"


def rescore(grid: str, rows: list[dict]) -> list[dict]:
    """Score every finished cell again from its saved run with the code as it is now (no training)."""
    from tqdm.auto import tqdm

    from qornn.train.checkpoint import load_run

    t = TASKS[GRIDS[grid][0]]
    out = []
    for r in tqdm(rows, desc=f"rescore {grid}", dynamic_ncols=True):
        method, bits, qat, spectral, scale = key(r)
        model, task, _ = load_run(ROOT / "runs" / "qat" / grid / cell_name(method, bits, qat, spectral, scale))
        out.append(r | score(model, task, t["eval_batches"], int(r["act_bits"])))
    return out


def read_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def write_all(out: Path, rows: list[dict], title: str) -> None:
    from qornn.atomic import write_bytes_atomic

    rows = sorted(rows, key=lambda r: (r["method"], int(r["weight_bits"]), str(r["hidden_qat"]), str(r["spectral"]),
                                       SCALES.index(r["weight_scale"])))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=FIELDS, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    write_bytes_atomic(out / "results.csv", buf.getvalue().encode())
    write_bytes_atomic(out / "results.md", (markdown(rows, title) + "\n").encode())
    plot(out, rows, title)


def markdown(rows: list[dict], title: str) -> str:
    lines = [title, "", "| method | bits | hidden state | q(W) scale | weight scale | fq | integer | gap | "
             "agree | sigma_max q(W) | M_W, M_U |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        qat = "QAT (LSQ)" if str(r["hidden_qat"]) == "True" else "calibrated"
        spec = "spectral" if str(r["spectral"]) == "True" else "-"
        lines.append(f"| {r['method']} | {r['weight_bits']} | {qat} | {spec} | {r['weight_scale']} | "
                     f"{float(r['fq']):.3f} | **{float(r['integer']):.3f}** | {float(r['gap']):+.3f} | "
                     f"{float(r['agree']):.3f} | {float(r['sigma_max']):.3f} | {r['m_w']}, {r['m_u']} |")
    return "\n".join(lines)


def plot(out: Path, rows: list[dict], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 0.28 * len(rows) + 1.2))
    labels = []
    for i, r in enumerate(rows):
        f, g = float(r["fq"]), float(r["integer"])
        ax.plot([f, g], [i, i], "-", color="0.7", zorder=1)
        ax.scatter([f], [i], marker="o", facecolor="none", edgecolor="C0", zorder=2,
                   label="fake-quantized" if i == 0 else None)
        ax.scatter([g], [i], marker="x", color="C3", zorder=3, label="integer simulator" if i == 0 else None)
        labels.append(f"{r['method'].replace('ste-', '')} {r['weight_bits']}b "
                      f"{'QAT' if str(r['hidden_qat']) == 'True' else 'cal'} "
                      f"{'spec ' if str(r['spectral']) == 'True' else ''}{r['weight_scale']}")
    ax.set_yticks(range(len(rows)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("test metric (accuracy)")
    ax.set_title(title.split("\n")[0][:100], fontsize=8)
    ax.legend(fontsize=7, loc="lower left")
    ax.grid(axis="x", alpha=0.3)
    tmp = out / ".gap.tmp.png"
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(out / "gap.png")


COLS = [(False, "max"), (False, "lsq"), (False, "po2"), (True, "max"), (True, "lsq"), (True, "po2")]


def pivot(rows: list[dict], bits_list, cols=COLS) -> str:
    """Markdown: a row per (method, bits, hidden state), a column per (spectral, weight scale);
    cells `fake-quantized / **integer**`."""
    head = ["method", "bits", "hidden state"] + [f"{sc}{' + spectral' if sp else ''}" for sp, sc in cols]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    idx = {key(r): r for r in rows}
    for method in METHODS:
        for bits in bits_list:
            for qat in (False, True):
                cells = []
                for sp, sc in cols:
                    r = idx.get((method, bits, qat, sp, sc))
                    cells.append("" if r is None else f"{float(r['fq']):.3f} / **{float(r['integer']):.3f}**")
                if any(cells):
                    lines.append(f"| {method} | {bits} | {'QAT (LSQ)' if qat else 'calibrated'} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def tables() -> str:
    """The tables of docs/results.md's integer-aware training section, from the grids' CSVs."""
    out = []
    for grid, bits, cols in (("pmnist4", [4], COLS), ("pmnist68", [6, 8], [(False, "max"), (False, "lsq"),
                                                                          (False, "po2"), (True, "max")]),
                             ("copy", [4, 5], COLS)):
        rows = read_rows(OUT / grid / "results.csv")
        if rows:
            agree = [float(r["agree"]) for r in rows if str(r["hidden_qat"]) == "True"]
            gaps = [abs(float(r["gap"])) for r in rows if str(r["hidden_qat"]) == "True"]
            out += [f"### {grid}", "", pivot(rows, bits, cols), "",
                    f"QAT cells: {len(agree)}; agreement of predictions min {min(agree, default=0):.4f}; "
                    f"largest |integer - fake-quantized| {max(gaps, default=0):.4f}", ""]
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--grid", choices=sorted(GRIDS))
    ap.add_argument("--tables", action="store_true", help="print the markdown tables of docs/results.md from the "
                    "grids' results.csv, then stop")
    ap.add_argument("--write", action="store_true", help="write docs/results.md's section from the grids' "
                    "results.csv and benchmarks/qat_grid_notes.md, then stop")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1: a shared machine)")
    ap.add_argument("--limit", type=int, default=None, help="run at most this many new cells, then stop")
    ap.add_argument("--rescore", action="store_true", help="score the finished cells again from their saved "
                    "runs with the code as it is now (no training), then stop")
    args = ap.parse_args(argv)
    if args.tables:
        print(tables())
        return 0
    if args.write:
        import sys

        sys.path.insert(0, str(Path(__file__).parent))
        from _docsection import write_section

        section = "\n".join([f"## {SECTION}", "", (Path(__file__).parent / "qat_grid_notes.md").read_text().strip(),
                              "", tables()])
        write_section(ROOT / "docs" / "results.md", SECTION, section)
        print(f"wrote the section '{SECTION}' of docs/results.md")
        return 0
    if args.grid is None:
        ap.error("--grid is required (or --tables / --write)")
    import torch
    from tqdm.auto import tqdm

    torch.set_num_threads(args.threads)
    task_name, cells = GRIDS[args.grid]
    t = TASKS[task_name]
    out = OUT / args.grid
    out.mkdir(parents=True, exist_ok=True)
    rows = read_rows(out / "results.csv")
    if args.rescore:
        rows = rescore(args.grid, rows)
    done = {key(r) for r in rows}
    todo = [] if args.rescore else [c for c in cells if (c[0], c[1], c[2], c[3], c[4]) not in done][: args.limit]
    opts = " ".join(f"--{k} {v}" for k, v in t["options"].items())
    title = (f"`{t['task']}` {opts}, hidden {t['hidden']}, {t['steps']} Adam steps (batch 64, lr {t['lr']}, seed 0), "
             f"8-bit hidden state, {t['eval_batches']} x 128 held-out sequences; "
             "`benchmarks/qat_grid.py --grid " + args.grid + "`")
    bar = tqdm(todo, desc=args.grid, dynamic_ncols=True)
    for method, bits, qat, spectral, scale in bar:
        bar.set_postfix(cell=f"{method} {bits}b qat={qat} spec={spectral} {scale}")
        name = cell_name(method, bits, qat, spectral, scale)
        row = run_cell(t, method, bits, qat, spectral, scale, ROOT / "runs" / "qat" / args.grid / name)
        rows.append(row)
        tqdm.write(f"{name}: fq {row['fq']:.3f} integer {row['integer']:.3f} agree {row['agree']:.3f} "
                   f"sigma {row['sigma_max']:.3f} ({row['seconds']} s)")
        write_all(out, rows, title)
    if rows:
        write_all(out, rows, title)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
