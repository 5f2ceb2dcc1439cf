"""Float / fake-quantized / integer-simulator metrics of one run, as a markdown row for docs/results.md.

A finished run is read with load_run; an unfinished one (RUN.partial, e.g. a long CPU run cut by
the end of a session) from its newest checkpoint, and the row says "partial, step N of M". The
integer metric is the exported artifact run by the NumPy simulator (qornn.export.evaluate).

    .venv/bin/python benchmarks/evaluate_run.py RUN [--act-bits 12] [--eval-batches 0]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from qornn.errors import QornnError


def load_any(run: Path):
    """(model, task, note) from a finished run, or from the newest checkpoint of RUN.partial."""
    from qornn.train.checkpoint import build_model, build_task, load_run
    from qornn.train.config import TrainConfig
    from qornn.train.resume import Partial, partial_dir
    from qornn.train.trainer import make_optimizer

    if (run / "config.json").exists():
        model, task, cfg = load_run(run)
        return model, task, f"finished, {cfg['train']['steps']} steps"
    part = Partial(run, create=False)  # takes the lock: nobody is training it right now
    try:
        plan = part.read_plan()
        where = str(part.dir / "plan.json")
        cfg = TrainConfig.from_dict(plan["train"], where)
        task = build_task(plan["task"], where)
        model = build_model(plan["model"], where, task=task)
        step, *_ = part.load(model, make_optimizer(model, cfg), cfg.optimizer)
    finally:
        part.release()
    model.eval()
    return model, task, f"**partial**: step {step} of {cfg.steps} (checkpoint in {partial_dir(run).name})"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--act-bits", type=int, default=12)
    ap.add_argument("--eval-batches", type=int, default=0, help="held-out batches of 128 (0 = whole test split)")
    args = ap.parse_args(argv)
    from qornn.export.evaluate import evaluate_artifact
    from qornn.export.exporter import export_model
    from qornn.train.trainer import diagnostics, evaluate

    try:
        model, task, note = load_any(Path(args.run))
        nb = args.eval_batches or None
        t0 = time.time()
        m = task.metric
        art, _ = export_model(model, task, act_bits=args.act_bits)
        with torch.no_grad():
            f, q = evaluate(model, task, nb, quantized=False)[m], evaluate(model, task, nb)[m]
        i = evaluate_artifact(art, task, nb)[m]
        d = diagnostics(model)
    except QornnError as e:
        print(f"evaluate_run: error: {e}", file=sys.stderr)
        return 2
    print(f"| {task.name} | {model.method} | {model.weight_bits} | {model.hidden_size} | {f:.4f} / {q:.4f} / "
          f"**{i:.4f}** | {args.act_bits} | σ(q(W)) in [{d['sigma_min']:.3f}, {d['sigma_max']:.3f}] | {note} |")
    print(f"(evaluated in {time.time() - t0:.0f} s on {'the whole test split' if nb is None else f'{nb} x 128 held-out sequences'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
