"""Reproduction harness: methods x weight bits on one task at a stated budget.

Per cell: the float metric (quantization off), the fake-quantized metric (what training sees),
and the integer-simulator metric (what the hardware computes), all on the same held-out data.
Writes results.csv, results.md and sweep.png (metric versus bits, one line per method)."""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path

from qornn.errors import QornnError

ALL_METHODS = ["ste-bjorck", "ste-projunn", "ste-pen", "ptq-projunn", "fp"]


def run_grid(task_name: str, methods: list[str], bits: list[int], hidden: int, steps: int, out,
             act_bits: int = 12, lr: float = 1e-3, batch_size: int = 64, seed: int = 0,
             task_options: dict | None = None, eval_batches: int | None = 4, device: str = "cpu") -> list[dict]:
    import torch
    from tqdm.auto import tqdm

    from qornn.export.evaluate import evaluate_artifact
    from qornn.export.exporter import export_model
    from qornn.train import QORNN
    from qornn.train.tasks import make_task
    from qornn.train.trainer import evaluate, train

    for m in methods:
        if m not in ALL_METHODS:
            raise QornnError(f"unknown method {m!r}; choose from {', '.join(ALL_METHODS)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    task = make_task(task_name, **(task_options or {}))
    rows = _resume(out, task_name, hidden, steps, act_bits, seed)
    done = {(r["method"], r["weight_bits"]) for r in rows}
    cells = [(m, k) for m in methods for k in bits if (m, k) not in done]
    bar = tqdm(cells, desc=f"{task_name} grid", dynamic_ncols=True)
    for method, k in bar:
        bar.set_postfix(method=method, bits=k)
        torch.manual_seed(seed)
        model = QORNN(task.input_size, hidden, task.output_size, weight_bits=k, method=method,
                      output_mode=task.output_mode)
        t0 = time.time()
        train(model, task, steps, out / "runs" / f"{method}-w{k}", batch_size=batch_size, lr=lr, seed=seed,
              force=True, device=device, progress=False)
        model.cpu().eval()
        art, _ = export_model(model, task, act_bits=act_bits)
        m = task.metric
        row = {"task": task_name, "method": method, "weight_bits": k, "act_bits": act_bits, "hidden": hidden,
               "steps": steps, "seed": seed,
               "float": evaluate(model, task, eval_batches, quantized=False)[m],
               "fake_quantized": evaluate(model, task, eval_batches)[m],
               "integer": evaluate_artifact(art, task, eval_batches)[m],
               "seconds": round(time.time() - t0, 1)}
        rows.append(row)
        _write(out, rows, task, bits, methods)
    return rows


def _resume(out: Path, task_name, hidden, steps, act_bits, seed) -> list[dict]:
    """Rows of an earlier, interrupted run of the same grid (same task, budget and seed)."""
    path = out / "results.csv"
    if not path.exists():
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    keep = []
    for r in rows:
        same = (r["task"], int(r["hidden"]), int(r["steps"]), int(r["act_bits"]), int(r["seed"])) == \
            (task_name, hidden, steps, act_bits, seed)
        if same:
            keep.append({k: (int(v) if k in ("weight_bits", "act_bits", "hidden", "steps", "seed") else
                             float(v) if k in ("float", "fake_quantized", "integer", "seconds") else v)
                         for k, v in r.items()})
    return keep


def _write(out: Path, rows: list[dict], task, bits, methods) -> None:
    from qornn.atomic import write_bytes_atomic

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    write_bytes_atomic(out / "results.csv", buf.getvalue().encode())
    m = task.metric
    r0 = rows[0]
    lines = [f"Task `{task.name}` {json.dumps(task.config())}; hidden {r0['hidden']}, {r0['steps']} steps, "
             f"seed {r0['seed']}, hidden state {r0['act_bits']} bits. Metric: {m} "
             f"({'higher' if getattr(task, 'higher_is_better', True) else 'lower'} is better); "
             f"cells: float / fake-quantized / integer simulator.", "",
             "| method | " + " | ".join(f"{k}-bit" for k in bits) + " |", "|---|" + "---|" * len(bits)]
    for method in methods:
        cells = []
        for k in bits:
            r = next((r for r in rows if r["method"] == method and r["weight_bits"] == k), None)
            cells.append("" if r is None else f"{r['float']:.3f} / {r['fake_quantized']:.3f} / **{r['integer']:.3f}**")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    write_bytes_atomic(out / "results.md", ("\n".join(lines) + "\n").encode())
    _plot(out, rows, task, methods)


def _plot(out: Path, rows, task, methods) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for i, method in enumerate(methods):
        rs = [r for r in rows if r["method"] == method]
        if rs:
            ax.plot([r["weight_bits"] for r in rs], [r["integer"] for r in rs], "o-", color=f"C{i}", label=method)
            ax.plot([r["weight_bits"] for r in rs], [r["float"] for r in rs], ":", color=f"C{i}", alpha=0.5)
    ax.set_xticks(sorted({r["weight_bits"] for r in rows}))
    ax.set_xlabel("weight bits"), ax.set_ylabel(f"{task.metric} (integer simulator; dotted: float)")
    ax.set_title(f"{task.name}: methods x weight bits", fontsize=10)
    ax.legend(fontsize=8)
    tmp = out / ".sweep.tmp.png"
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(out / "sweep.png")
