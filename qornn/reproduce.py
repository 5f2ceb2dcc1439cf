"""Reproduction harness: methods x weight bits x seeds on one task at a stated budget.

Per cell: the float metric (quantization off), the fake-quantized metric (what training sees),
and the integer-simulator metric (what the hardware computes), all on the same held-out data.
Writes results.csv, results.md (mean ± std over seeds) and sweep.png.

Cells run as Ray tasks (an in-process local Ray by default, or an existing cluster with
`ray_address`), or one after another in this process (`use_ray=False`). Each cell trains into
OUT/runs/<cell>/ with the trainer's checkpoints, so a killed worker or driver loses at most a
checkpoint interval: Ray retries a crashed task, and running the same grid again keeps the
finished rows of results.csv and resumes the unfinished cells. A failing cell becomes a row
with status "failed" and its one-line error; the grid goes on, and the caller learns of it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import statistics
import time
from pathlib import Path

from qornn.errors import QornnError

ALL_METHODS = ["ste-bjorck", "ste-projunn", "ste-pen", "ptq-projunn", "fp"]
COLUMNS = ["task", "method", "weight_bits", "act_bits", "hidden", "steps", "seed", "status", "float",
           "fake_quantized", "integer", "seconds", "error", "plan"]
INT_COLS = ("weight_bits", "act_bits", "hidden", "steps", "seed")
FLOAT_COLS = ("float", "fake_quantized", "integer", "seconds")
LOCK_WAIT_S = 60          # a cell whose run is locked by a dying orphan worker waits this long


def _qat_bits(method: str, qat: bool, act_bits: int) -> int | None:
    """The hidden-state QAT width of a cell (None: calibrated). Only the STE methods train quantized;
    ptq-projunn and fp train in full precision and are calibrated at export."""
    return act_bits if qat and method.startswith("ste-") else None


def run_grid(task_name: str, methods: list[str], bits: list[int], hidden: int, steps: int | None, out,
             act_bits: int = 12, lr: float = 1e-3, batch_size: int = 64, seed: int | None = 0,
             task_options: dict | None = None, eval_batches: int | None = 4, device: str = "cpu",
             seeds: list[int] | None = None, use_ray: bool = True, ray_address: str | None = None,
             workers: int | None = None, progress: bool = True, qat: bool = False, **train_options) -> list[dict]:
    """Run (or finish) the grid; returns every row. Everything is validated before OUT is created.

    qat: train every quantized cell with hidden-state QAT at `act_bits` (export then uses the
    trained scales); otherwise the hidden state is calibrated after training."""
    from qornn.train.config import TrainConfig, resolve_epochs
    from qornn.train.quantizers import check_bits
    from qornn.train.tasks import make_task
    from qornn.train.trainer import check_budget

    for m in methods:
        if m not in ALL_METHODS:
            raise QornnError(f"unknown method {m!r}; choose from {', '.join(ALL_METHODS)}")
    for k in bits:
        check_bits(k, "weight bits")
    check_bits(act_bits, "activation bits", 2, 16)
    if not methods or not bits:
        raise QornnError("the grid needs at least one method and one bit width")
    seeds = list(dict.fromkeys(seeds if seeds else [0 if seed is None else seed]))
    task = make_task(task_name, **(task_options or {}))
    cfgs = {}
    for s in seeds:
        c = TrainConfig(steps=1000 if steps is None else steps, batch_size=batch_size, lr=lr, seed=s,
                        device=device, **train_options).validate()
        cfgs[s] = resolve_epochs(c, task)
    if eval_batches is not None and eval_batches < 1:
        raise QornnError(f"eval batches must be >= 1 (or None for the whole test split), got {eval_batches}")
    if workers is not None and workers < 1:
        raise QornnError(f"--workers must be >= 1, got {workers}")
    for m in methods:
        check_budget({"hidden_size": hidden, "input_size": task.input_size, "output_size": task.output_size,
                      "output_mode": task.output_mode}, task, cfgs[seeds[0]])
    from qornn.train import QORNN  # a method/bits/hidden combination QORNN refuses fails here, not in a cell

    for m in methods:
        for k in bits:
            QORNN(task.input_size, min(hidden, 4), task.output_size, weight_bits=k, method=m,
                  output_mode=task.output_mode, act_bits=_qat_bits(m, qat, act_bits))

    out = Path(out).absolute()
    if out.exists() and not out.is_dir():
        raise QornnError(f"output path {out} exists and is not a directory")
    rows = _resume(out)  # reads (and validates) an earlier results.csv before anything is written
    specs = []
    for method in methods:
        for k in bits:
            for s in seeds:
                spec = {"task": task.config(), "method": method, "weight_bits": k, "hidden": hidden,
                        "act_bits": act_bits, "eval_batches": eval_batches, "train": cfgs[s].to_dict(),
                        "out": str(out / "runs" / cell_name(method, k, s, len(seeds)))}
                if _qat_bits(method, qat, act_bits):
                    spec["qat"] = True   # only when set: the plans of calibrated grids keep their hashes
                spec["plan"] = plan_hash(spec)
                specs.append(spec)
    plans = {s["plan"] for s in specs}
    rows = [r for r in rows if r["plan"] in plans and r["status"] == "ok"]
    done = {r["plan"] for r in rows}
    todo = [s for s in specs if s["plan"] not in done]
    out.mkdir(parents=True, exist_ok=True)
    meta = {"task": task, "bits": bits, "methods": methods, "seeds": seeds, "qat": qat}
    if rows:
        _write(out, rows, **meta)
    if todo:
        runner = _run_ray if use_ray else _run_serial
        runner(todo, rows, out, meta, progress, ray_address=ray_address, workers=workers)
    return rows


def cell_name(method: str, bits: int, seed: int, n_seeds: int) -> str:
    return f"{method}-w{bits}" + (f"-s{seed}" if n_seeds > 1 or seed != 0 else "")


def plan_hash(spec: dict) -> str:
    """What a row was computed from: a finished row is reused only for exactly the same plan."""
    keep = {k: v for k, v in spec.items() if k not in ("out", "plan")}
    keep["train"] = {k: v for k, v in keep["train"].items() if k not in ("checkpoint_every", "checkpoint_seconds")}
    return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]


# -- one cell ------------------------------------------------------------------------------------
def run_cell(spec: dict, threads: int | None = None) -> dict:
    """Train (resuming if a checkpoint exists), export, evaluate: a row, 'failed' with its error on error."""
    t0 = time.time()
    tr = spec["train"]
    row = {"task": spec["task"]["name"], "method": spec["method"], "weight_bits": spec["weight_bits"],
           "act_bits": spec["act_bits"], "hidden": spec["hidden"], "steps": tr["steps"], "seed": tr["seed"],
           "status": "ok", "float": math.nan, "fake_quantized": math.nan, "integer": math.nan,
           "seconds": 0.0, "error": "", "plan": spec["plan"]}
    try:
        import torch

        if threads:
            torch.set_num_threads(threads)
        row |= _cell_metrics(spec)
    except Exception as e:  # noqa: BLE001 - any failure of one cell is reported, the grid goes on
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        row |= {"status": "failed", "error": f"{type(e).__name__}: {msg}"[:300] if not isinstance(e, QornnError)
                else msg[:300]}
    row["seconds"] = round(time.time() - t0, 1)
    return row


def _cell_metrics(spec: dict) -> dict:
    import torch

    from qornn.export.evaluate import evaluate_artifact
    from qornn.export.exporter import export_model
    from qornn.train import QORNN
    from qornn.train.checkpoint import CONFIG_FILE, build_task, load_run
    from qornn.train.trainer import evaluate, train

    task = build_task(spec["task"], "grid cell")
    tr = dict(spec["train"])
    run = Path(spec["out"])
    model = None
    if (run / CONFIG_FILE).is_file():  # finished earlier (its row may not have been merged): reuse it
        try:
            m, _, cfg = load_run(run)
            saved = {k: v for k, v in cfg["train"].items() if k not in ("seconds", "final", "steps_per_epoch")}
            if saved == tr and m.config["method"] == spec["method"] and m.weight_bits == spec["weight_bits"] \
                    and m.hidden_size == spec["hidden"] and cfg["task"] == task.config() \
                    and m.act_bits == (spec["act_bits"] if spec.get("qat") else None):
                model = m
        except QornnError:
            model = None
    if model is None:
        torch.manual_seed(tr["seed"])
        model = QORNN(task.input_size, spec["hidden"], task.output_size, weight_bits=spec["weight_bits"],
                      method=spec["method"], output_mode=task.output_mode,
                      act_bits=spec["act_bits"] if spec.get("qat") else None)
        steps, batch, lr, seed = tr.pop("steps"), tr.pop("batch_size"), tr.pop("lr"), tr.pop("seed")
        deadline = time.time() + LOCK_WAIT_S
        while True:
            try:
                train(model, task, steps, run, batch_size=batch, lr=lr, seed=seed, force=True, resume=True,
                      progress=False, **tr)
                break
            except QornnError as e:  # an orphan worker of a killed driver may still hold the run
                if "being trained by another process" not in str(e) or time.time() > deadline:
                    raise
                time.sleep(2)
    model.cpu().eval()
    art, _ = export_model(model, task, act_bits=spec["act_bits"])
    m, nb = task.metric, spec["eval_batches"]
    return {"float": evaluate(model, task, nb, quantized=False)[m], "fake_quantized": evaluate(model, task, nb)[m],
            "integer": evaluate_artifact(art, task, nb)[m]}


# -- runners -------------------------------------------------------------------------------------
def _merge(rows: list[dict], row: dict, out: Path, meta: dict) -> None:
    rows[:] = [r for r in rows if r["plan"] != row["plan"]] + [row]
    _write(out, rows, **meta)


def _bar(todo, progress):
    from tqdm.auto import tqdm

    return tqdm(total=len(todo), desc=f"{todo[0]['task']['name']} grid", disable=not progress, dynamic_ncols=True)


def _run_serial(todo, rows, out, meta, progress, **_):
    bar = _bar(todo, progress)
    failed = 0
    for spec in todo:
        bar.set_postfix(running=f"{spec['method']}-w{spec['weight_bits']}", failed=failed)
        row = run_cell(spec)
        failed += row["status"] != "ok"
        _merge(rows, row, out, meta)
        bar.update()
    bar.close()


def _run_ray(todo, rows, out, meta, progress, ray_address=None, workers=None):
    import os

    try:
        import ray
    except ImportError:
        raise QornnError("Ray is not installed (pip install 'ray==2.60.0'), or run the grid with --no-ray") from None
    started = False
    if not ray.is_initialized():
        import logging

        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        # quiet start-up: Ray's own warnings (e.g. that its local cluster uses token auth) stay out of
        # the one-line-per-problem output; its errors still show
        logging.getLogger("ray").setLevel(logging.ERROR)
        kw = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
                  configure_logging=False)
        try:
            if ray_address:
                ray.init(address=ray_address, **kw)
            else:
                ray.init(num_cpus=workers or min(2, os.cpu_count() or 1), **kw)
        except Exception as e:  # noqa: BLE001 - a bad address or a failed start is one line
            raise QornnError(f"cannot start or reach Ray{f' at {ray_address}' if ray_address else ''}: "
                             f"{str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}") from None
        started = True
    try:
        remote = ray.remote(num_cpus=1, max_retries=3, retry_exceptions=False)(run_cell)
        pending = {remote.remote(spec, 1): spec for spec in todo}
        bar = _bar(todo, progress)
        failed = 0
        slots = max(1, int(ray.cluster_resources().get("CPU", 1)))
        while pending:
            bar.set_postfix(running=min(len(pending), slots), queued=max(0, len(pending) - slots), failed=failed)
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                spec = pending.pop(ref)
                try:
                    row = ray.get(ref)
                except Exception as e:  # noqa: BLE001 - the worker died for good (retries spent)
                    row = run_cell_failed(spec, f"{type(e).__name__}: {str(e).strip().splitlines()[0][:200]}")
                failed += row["status"] != "ok"
                _merge(rows, row, out, meta)
                bar.update()
        bar.close()
    finally:
        if started:
            ray.shutdown()


def run_cell_failed(spec: dict, error: str) -> dict:
    tr = spec["train"]
    return {"task": spec["task"]["name"], "method": spec["method"], "weight_bits": spec["weight_bits"],
            "act_bits": spec["act_bits"], "hidden": spec["hidden"], "steps": tr["steps"], "seed": tr["seed"],
            "status": "failed", "float": math.nan, "fake_quantized": math.nan, "integer": math.nan,
            "seconds": 0.0, "error": error, "plan": spec["plan"]}


# -- results files ---------------------------------------------------------------------------------
def _resume(out: Path) -> list[dict]:
    """Rows of an earlier run of this grid (results.csv), every field checked; a bad file is one line."""
    from qornn.jsonio import read_text

    path = out / "results.csv"
    if not path.exists():
        return []
    try:
        text = read_text(path, "grid results file")
    except QornnError as e:
        raise QornnError(f"{e}; delete it to start the grid afresh") from None
    rows = []
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
        header = reader.fieldnames or []
        if header != COLUMNS:
            raise QornnError(f"{path}: header is not {','.join(COLUMNS)}; delete it to start the grid afresh")
        for r in reader:
            rows.append(_parse_row(r, f"{path} line {reader.line_num}"))
    except csv.Error as e:
        raise QornnError(f"{path}: malformed CSV ({e}); delete it to start the grid afresh") from None
    return rows


def _parse_row(r: dict, where: str) -> dict:
    if None in r or any(v is None for v in r.values()):
        raise QornnError(f"{where}: expected {len(COLUMNS)} fields")
    row = dict(r)
    for k in INT_COLS:
        v = r[k]
        if not (v.isascii() and v.lstrip("-").isdigit() and len(v) <= 20):
            raise QornnError(f"{where}: field '{k}' must be an integer, got {v[:40]!r}")
        row[k] = int(v)
    for k in FLOAT_COLS:
        try:
            if len(r[k]) > 40:
                raise ValueError
            row[k] = float(r[k])
        except ValueError:
            raise QornnError(f"{where}: field '{k}' must be a number, got {r[k][:40]!r}") from None
    if row["method"] not in ALL_METHODS:
        raise QornnError(f"{where}: field 'method' must be one of {', '.join(ALL_METHODS)}, got {row['method'][:40]!r}")
    if row["status"] not in ("ok", "failed"):
        raise QornnError(f"{where}: field 'status' must be ok or failed, got {row['status'][:40]!r}")
    if row["status"] == "ok" and not all(math.isfinite(row[k]) for k in ("float", "fake_quantized", "integer")):
        raise QornnError(f"{where}: an ok row needs finite float, fake_quantized and integer metrics")
    if not (len(row["plan"]) == 16 and all(c in "0123456789abcdef" for c in row["plan"])):
        raise QornnError(f"{where}: field 'plan' must be 16 hex digits")
    return row


def mean_std(values: list[float]) -> str:
    if not values:
        return ""
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f}±{statistics.stdev(values):.3f}"


def _write(out: Path, rows: list[dict], task, bits, methods, seeds, qat=False) -> None:
    from qornn.atomic import write_bytes_atomic

    rows.sort(key=lambda r: (methods.index(r["method"]) if r["method"] in methods else 99, r["weight_bits"], r["seed"]))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS)
    w.writeheader()
    w.writerows(rows)
    write_bytes_atomic(out / "results.csv", buf.getvalue().encode())
    m = task.metric
    ok = [r for r in rows if r["status"] == "ok"]
    r0 = rows[0]
    n = len(seeds)
    lines = [f"Task `{task.name}` {json.dumps(task.config())}; hidden {r0['hidden']}, {r0['steps']} steps, "
             f"seed{'s' if n > 1 else ''} {', '.join(map(str, seeds))}, hidden state {r0['act_bits']} bits "
             f"({'trained in: hidden-state QAT' if qat else 'calibrated after training'}). "
             f"Metric: {m} ({'higher' if getattr(task, 'higher_is_better', True) else 'lower'} is better); "
             "cells: float / fake-quantized / integer simulator"
             + (f" (mean ± std over {n} seeds)" if n > 1 else "") + ".", "",
             "| method | " + " | ".join(f"{k}-bit" for k in bits) + " |", "|---|" + "---|" * len(bits)]
    for method in methods:
        cells = []
        for k in bits:
            rs = [r for r in ok if r["method"] == method and r["weight_bits"] == k]
            if not rs:
                bad = any(r["method"] == method and r["weight_bits"] == k for r in rows)
                cells.append("failed" if bad else "")
                continue
            vals = [mean_std([r[c] for r in rs]) for c in ("float", "fake_quantized", "integer")]
            part = f" ({len(rs)}/{n} seeds)" if len(rs) < n and n > 1 else ""
            cells.append(f"{vals[0]} / {vals[1]} / **{vals[2]}**{part}")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    failed = [r for r in rows if r["status"] != "ok"]
    if failed:
        lines += ["", "Failed cells:", ""] + [f"- {r['method']} {r['weight_bits']}-bit seed {r['seed']}: {r['error']}"
                                             for r in failed]
    write_bytes_atomic(out / "results.md", ("\n".join(lines) + "\n").encode())
    _plot(out, ok, task, methods)


def _plot(out: Path, rows, task, methods) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from qornn.atomic import write_bytes_atomic

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for i, method in enumerate(methods):
        ks = sorted({r["weight_bits"] for r in rows if r["method"] == method})
        if ks:
            mean = lambda c: [statistics.mean(r[c] for r in rows if r["method"] == method and r["weight_bits"] == k)  # noqa: E731
                              for k in ks]
            ax.plot(ks, mean("integer"), "o-", color=f"C{i}", label=method)
            ax.plot(ks, mean("float"), ":", color=f"C{i}", alpha=0.5)
    ax.set_xticks(sorted({r["weight_bits"] for r in rows}) or [0])
    ax.set_xlabel("weight bits"), ax.set_ylabel(f"{task.metric} (integer simulator; dotted: float)")
    ax.set_title(f"{task.name}: methods x weight bits", fontsize=10)
    if rows:
        ax.legend(fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    write_bytes_atomic(out / "sweep.png", buf.getvalue())
