"""`qornn demo`: the whole pipeline on a short copy task, in a few minutes on 2 cores.

Train (STE-Björck, 4-bit weights) -> export (8-bit hidden state) -> integer simulator -> ONNX
-> hls4ml C-simulation -> Verilog core in Verilator (qornn.rtl), then one table: the task metric of every executor and whether the
integer executors agree bit for bit."""

from __future__ import annotations

import time
from pathlib import Path

DEMO = dict(task="copy", length=50, hidden=64, weight_bits=4, act_bits=8, steps=1500, lr=2e-3, seed=0)
# the folded core builds in seconds; the parallel one (one step per clock) takes minutes to verilate
DEMO_RTL = dict(arch="folded", lanes=8)


MARKER = ".qornn-demo"   # marks a directory as the demo's own, which a later demo may overwrite


def claim_output(out: Path, force: bool) -> None:
    """The demo replaces its own earlier files, never a user's: a non-empty --out must carry the
    marker of an earlier demo (or --force)."""
    from qornn.atomic import check_not_cwd
    from qornn.errors import QornnError

    check_not_cwd(out)
    if out.exists():
        if not out.is_dir():
            raise QornnError(f"demo output {out} exists and is not a directory")
        if any(out.iterdir()) and not (out / MARKER).is_file() and not force:
            raise QornnError(f"{out} holds files the demo did not write; choose another --out "
                             "(or pass --force to let the demo replace its run/, artifact/, hls/ and rtl/ there)")
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("written by `qornn demo`; a later demo may replace this directory's contents\n")


def run_demo(out: str = "demo-out", steps: int | None = None, force: bool = False) -> int:
    import torch

    from qornn.cli import export_run
    from qornn.export.evaluate import evaluate_artifact
    from qornn.train import QORNN
    from qornn.train.tasks import make_task
    from qornn.train.trainer import evaluate, train

    cfg = DEMO | ({"steps": steps} if steps is not None else {})
    out = Path(out)
    claim_output(out, force)
    run_dir, art_dir = out / "run", out / "artifact"
    t0 = time.time()
    print(f"qornn demo: copy task (length {cfg['length']}, recall 10), hidden {cfg['hidden']}, "
          f"{cfg['weight_bits']}-bit weights, {cfg['steps']} steps of STE-Björck")
    task = make_task(cfg["task"], length=cfg["length"])
    torch.manual_seed(cfg["seed"])
    model = QORNN(task.input_size, cfg["hidden"], task.output_size, weight_bits=cfg["weight_bits"])
    train(model, task, cfg["steps"], run_dir, lr=cfg["lr"], seed=cfg["seed"], force=True)
    t_train = time.time() - t0
    art, costs, task, _ = export_run(run_dir, art_dir, cfg["act_bits"], force=True)
    fp = costs["footprint"]
    model.eval()
    rows = [("float model (PyTorch)", evaluate(model, task, quantized=False), ""),
            (f"fake-quantized {cfg['weight_bits']}-bit (PyTorch)", evaluate(model, task), "")]
    t1 = time.time()
    sim = evaluate_artifact(art, task)
    rows.append((f"integer simulator (NumPy, {cfg['act_bits']}-bit h)", sim, f"golden ({time.time() - t1:.1f} s)"))
    hls_dir = out / "hls"
    print(f"generating and compiling the hls4ml project in {hls_dir} (C-simulation) ...")
    from qornn.hls.project import compile_project, write_project

    write_project(art, hls_dir, force=True)
    compile_project(hls_dir)
    rtl_dir = out / "rtl"
    print(f"generating the Verilog core in {rtl_dir} ({DEMO_RTL['arch']}, {DEMO_RTL['lanes']} lanes) and building "
          "its Verilator model ...")
    from qornn.rtl import write_rtl
    from qornn.rtl.sim import executable

    write_rtl(art, rtl_dir, force=True, **DEMO_RTL)
    executable(rtl_dir)
    rows += executor_rows(art, art_dir, hls_dir, task, rtl_dir)
    m = task.metric
    print()
    print(f"| executor | {m} | cross-entropy | bit-exact vs simulator |")
    print("|---|---|---|---|")
    for name, metrics, note in rows:
        print(f"| {name} | {metrics[m]:.4f} | {metrics['loss']:.4f} | {note} |")
    print(f"\nnaive baseline cross-entropy {task.baseline():.4f}; "
          f"gap fake-quantized -> integer: {rows[2][1][m] - rows[1][1][m]:+.4f} {m}")
    print(f"footprint: {fp['integer_bytes']} B integer vs {fp['float32_bytes']} B float32 ({fp['compression']}x)")
    print(f"files: run {run_dir}/, artifact {art_dir}/ (qornn.json, tensors.safetensors, model.onnx), "
          f"hls4ml project {hls_dir}/, Verilog core {out / 'rtl'}/")
    print(f"time: {time.time() - t0:.0f} s (training {t_train:.0f} s)")
    return 1 if any(note.startswith("MISMATCH") for _, _, note in rows) else 0


def executor_rows(art, art_dir: Path, hls_dir: Path, task, rtl_dir: Path | None = None) -> list:
    """Score ONNX and the C-simulation on the task's held-out data, comparing every output code
    with the simulator's (`==`), then run `qornn verify`'s random and boundary sequences."""
    import torch

    from qornn.export.onnx_writer import ONNX_FILE, make_session, run_onnx
    from qornn.export.simulator import quantize_input, simulate
    from qornn.hls.csim import run_csim
    from qornn.train.tasks import eval_data
    from qornn.train.trainer import MetricMean
    from qornn.verify import format_table, verify

    session = make_session(art_dir / ONNX_FILE)
    executors = {"ONNX (onnxruntime)": lambda codes: run_onnx(session, codes)[0],
                 "hls4ml C-simulation (g++)": lambda codes: run_csim(hls_dir, codes, art)}
    if rtl_dir is not None:
        from qornn.rtl import run_rtl

        executors[f"Verilog core in Verilator ({DEMO_RTL['arch']}, {DEMO_RTL['lanes']} lanes)"] = \
            lambda codes: run_rtl(rtl_dir, codes, art)[0]
    rows = []
    for name, run in executors.items():
        mean, equal, values = MetricMean(), 0, 0
        for x, y in eval_data(task):
            codes = quantize_input(art, x.numpy())
            want = simulate(art, codes, return_hidden=False).output
            got = run(codes)
            values += want.size
            equal += int((got == want).sum()) if got.shape == want.shape else 0
            mean.add(task.metrics(torch.from_numpy(got * art.output_scale), y), len(y))
        note = f"yes, {values} of {values} outputs" if equal == values else f"MISMATCH: {values - equal} of {values} differ"
        rows.append((name, mean.result(), note))
    report = verify(str(art_dir), onnx=True, hls_dir=str(hls_dir), budget=100_000, seed=0,
                    rtl_dir=None if rtl_dir is None else str(rtl_dir))
    print("\nqornn verify on random and saturating sequences:\n" + format_table(report))
    if not report["ok"]:
        rows.append(("qornn verify", rows[-1][1], "MISMATCH on random/boundary sequences"))
    return rows
