"""`qornn demo`: the whole pipeline on a short copy task, in a few minutes on 2 cores.

Train (STE-Björck, 4-bit weights) -> export (8-bit hidden state) -> integer simulator -> ONNX
-> hls4ml C-simulation, then one table: the task metric of every executor and whether the
integer executors agree bit for bit."""

from __future__ import annotations

import time
from pathlib import Path

DEMO = dict(task="copy", length=50, hidden=64, weight_bits=4, act_bits=8, steps=1500, lr=2e-3, seed=0)


def run_demo(out: str = "demo-out", steps: int | None = None) -> int:
    import torch

    from qornn.cli import export_run
    from qornn.export.evaluate import evaluate_artifact
    from qornn.train import QORNN
    from qornn.train.tasks import make_task
    from qornn.train.trainer import evaluate, train

    cfg = DEMO | ({"steps": steps} if steps is not None else {})
    out = Path(out)
    run_dir, art_dir = out / "run", out / "artifact"
    t0 = time.time()
    print(f"qornn demo: copy task (length {cfg['length']}, recall 10), hidden {cfg['hidden']}, "
          f"{cfg['weight_bits']}-bit weights, {cfg['steps']} steps of STE-Björck")
    task = make_task(cfg["task"], length=cfg["length"])
    torch.manual_seed(cfg["seed"])
    model = QORNN(task.input_size, cfg["hidden"], task.output_size, weight_bits=cfg["weight_bits"])
    train(model, task, cfg["steps"], run_dir, lr=cfg["lr"], seed=cfg["seed"], force=True)
    t_train = time.time() - t0
    art, fp, task = export_run(run_dir, art_dir, cfg["act_bits"], force=True)
    model.eval()
    rows = [("float model (PyTorch)", evaluate(model, task, quantized=False), ""),
            (f"fake-quantized {cfg['weight_bits']}-bit (PyTorch)", evaluate(model, task), "")]
    t1 = time.time()
    sim = evaluate_artifact(art, task)
    rows.append((f"integer simulator (NumPy, {cfg['act_bits']}-bit h)", sim, f"golden ({time.time() - t1:.1f} s)"))
    rows += _verified_rows(art_dir, sim)
    m = task.metric
    print()
    print(f"| executor | {m} | cross-entropy | bit-exact vs simulator |")
    print("|---|---|---|---|")
    for name, metrics, note in rows:
        print(f"| {name} | {metrics[m]:.4f} | {metrics['loss']:.4f} | {note} |")
    print(f"\nnaive baseline cross-entropy {task.baseline():.4f}; "
          f"gap fake-quantized -> integer: {rows[2][1][m] - rows[1][1][m]:+.4f} {m}")
    print(f"footprint: {fp['integer_bytes']} B integer vs {fp['float32_bytes']} B float32 ({fp['compression']}x)")
    print(f"files: run {run_dir}/, artifact {art_dir}/ (qornn.json, tensors.safetensors, model.onnx)"
          + (f", hls project {out / 'hls'}/" if (out / "hls").exists() else ""))
    print(f"time: {time.time() - t0:.0f} s (training {t_train:.0f} s)")
    return 0 if all(note == "" or not note.startswith("MISMATCH") for _, _, note in rows) else 1


def _verified_rows(art_dir: Path, sim_metrics: dict) -> list:
    """ONNX and hls4ml C-sim rows, present when those stages are installed."""
    rows = []
    try:
        from qornn.verify import verify
    except ImportError:
        return rows
    hls_dir = None
    try:
        from qornn.hls.project import compile_project, write_project
        from qornn.export.artifact import load_artifact

        hls_dir = art_dir.parent / "hls"
        print("generating and compiling the hls4ml project (C-simulation) ...")
        write_project(load_artifact(art_dir), hls_dir, force=True)
        compile_project(hls_dir)
    except ImportError:
        hls_dir = None
    report = verify(str(art_dir), onnx=True, hls_dir=str(hls_dir) if hls_dir else None,
                    sequences=64, length=200, seed=0)
    for row in report["rows"]:
        if row["executor"] == "simulator":
            continue
        ok = row["mismatches"] == 0
        note = (f"yes: {row['values']} values, 0 differ" if ok else f"MISMATCH: {row['mismatches']} values differ")
        rows.append((row["executor"], sim_metrics, note))
    return rows
