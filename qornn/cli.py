"""The `qornn` command line: train -> export -> simulate / verify / hls, and the demo.

Every user-facing failure is a QornnError, printed as one line with a non-zero exit."""

from __future__ import annotations

import argparse
import json
import sys

from qornn.errors import QornnError


def _positive(text: str) -> int:
    """argparse type: a non-negative integer (sizes and bit widths are range-checked downstream)."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {v}")
    return v


# -- train ---------------------------------------------------------------------------------
def add_train(sub):
    p = sub.add_parser("train", help="train a QORNN and write a run directory")
    p.add_argument("--task", default="copy", help="copy (default), adding, smnist, pmnist, ptb-char")
    p.add_argument("--method", default="ste-bjorck",
                   help="ste-bjorck (default), ste-projunn, ste-pen, ptq-projunn, fp")
    p.add_argument("--hidden", type=_positive, default=64, help="hidden units (default 64)")
    p.add_argument("--weight-bits", type=_positive, default=4, help="bits of W and U, 1..8 (default 4)")
    p.add_argument("--recurrent-bits", type=_positive, default=None, help="bits of W alone (overrides --weight-bits)")
    p.add_argument("--input-weight-bits", type=_positive, default=None, help="bits of U alone (overrides --weight-bits)")
    p.add_argument("--narrow-range", action="store_true",
                   help="symmetric weight codes [-(2^(k-1)-1), 2^(k-1)-1]; 2 bits = ternary {-1, 0, +1}")
    p.add_argument("--output-bits", type=_positive, default=None, help="quantize V to this many bits during training")
    p.add_argument("--activation", default="modrelu", help="modrelu (default) or relu")
    p.add_argument("--projunn-rank", type=_positive, default=1, help="rank k of projUNN updates (default 1)")
    p.add_argument("--projunn-mode", default="D", help="projUNN-D (polar, default) or T (tangent)")
    p.add_argument("--penalty", type=float, default=0.1, help="ste-pen orthogonality penalty weight (default 0.1)")
    p.add_argument("--length", type=_positive, default=None, help="sequence length (copy, adding, ptb-char)")
    p.add_argument("--pixels-per-step", type=_positive, default=None, help="(s/p)MNIST pixels per step (default 1)")
    p.add_argument("--steps", type=_positive, default=1000, help="optimizer steps; 0 writes the initial model")
    p.add_argument("--batch-size", type=_positive, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=_positive, default=0)
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--out", required=True, help="run directory to write")
    p.add_argument("--force", action="store_true", help="replace an existing run directory")
    add_qat_options(p)
    p.set_defaults(func=cmd_train)


def _rate(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 <= v < 1:
        raise argparse.ArgumentTypeError(f"expected a rate in [0, 1), got {v}")
    return v


def add_qat_options(p) -> None:
    """Integer-aware training (issue 10): hidden-state QAT, scales, rounding. -> QORNN arguments."""
    g = p.add_argument_group("integer-aware training")
    g.add_argument("--act-bits", type=_positive, default=None, help="quantize every step's hidden state to "
                   "this many bits in training (2..16), exactly as the integer loop will; export then uses "
                   "the trained scales (default: off, calibrate at export)")
    g.add_argument("--input-bits", type=_positive, default=8, help="input bits with --act-bits (default 8)")
    g.add_argument("--act-scale", default="lsq", help="hidden scale with --act-bits: lsq (learned, default) "
                   "or max (tracked running maximum)")
    g.add_argument("--weight-scale", default="max", help="weight scales: max (max-abs, default), lsq "
                   "(learned), po2 (powers of two: every requant multiplier 1, the loop only shifts)")
    g.add_argument("--spectral-scale", action="store_true", help="shrink the scale of q(W) so that "
                   "sigma_max(q(W)) <= 1 (same codes): a non-expansive quantized recurrence")
    g.add_argument("--rounding", default="nearest", help="weight rounding in training: nearest (default) "
                   "or stochastic (unbiased)")
    g.add_argument("--quant-noise", type=_rate, default=0.0, help="Quant-Noise: quantize only this random "
                   "fraction of the weights each training step (default 0: all)")


def qat_model_kwargs(args) -> dict:
    return dict(act_bits=args.act_bits, input_bits=args.input_bits, act_scale=args.act_scale,
                weight_scale=args.weight_scale, spectral_scale=args.spectral_scale, rounding=args.rounding,
                quant_noise=args.quant_noise)


def build_model_and_task(args):
    import torch

    from qornn.train import QORNN
    from qornn.train.tasks import make_task

    task = make_task(args.task, length=args.length, pixels_per_step=args.pixels_per_step)
    if args.hidden <= 0:
        raise QornnError(f"--hidden must be a positive integer, got {args.hidden}")
    if args.device != "cpu" and not (args.device.startswith("cuda") and torch.cuda.is_available()):
        raise QornnError(f"device {args.device!r} is not available here (use --device cpu)")
    torch.manual_seed(args.seed)
    model = QORNN(task.input_size, args.hidden, task.output_size, weight_bits=args.weight_bits,
                  activation=args.activation, method=args.method, output_mode=task.output_mode,
                  output_bits=args.output_bits, projunn_rank=args.projunn_rank, projunn_mode=args.projunn_mode,
                  penalty=args.penalty, recurrent_bits=args.recurrent_bits,
                  input_weight_bits=args.input_weight_bits, narrow_range=args.narrow_range,
                  **qat_model_kwargs(args))
    return model, task


def cmd_train(args) -> int:
    from qornn.train.trainer import train

    model, task = build_model_and_task(args)
    final = train(model, task, args.steps, args.out, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                  force=args.force, device=args.device)
    m = task.metric
    print(f"wrote {args.out}: {m} float {final['float'][m]:.4f}, fake-quantized {final['quantized'][m]:.4f} "
          f"({task.name}, {args.method}, hidden {args.hidden}, {args.weight_bits}-bit weights, {args.steps} steps)")
    return 0


# -- export --------------------------------------------------------------------------------
def add_export(sub):
    p = sub.add_parser("export", help="export a run to an integer artifact (+ ONNX)")
    p.add_argument("run", help="run directory from `qornn train`")
    p.add_argument("--act-bits", type=_positive, default=None,
                   help="hidden-state bits, 2..16 (default: as trained with --act-bits, else 8)")
    p.add_argument("--input-bits", type=_positive, default=None, help="input bits, 2..16 (default: as trained, else 8)")
    p.add_argument("--output-bits", type=_positive, default=None, help="bits of V, 1..8 (default: as trained, else 8)")
    p.add_argument("--weight-scale", default=None, help="max, lsq or po2 (default: as trained); po2 also makes "
                   "the calibrated s_x and s_h powers of two")
    p.add_argument("--spectral-scale", action="store_true", default=None,
                   help="shrink the scale of q(W) to sigma_max(q(W)) <= 1 (default: as trained)")
    p.add_argument("--calibrate", action="store_true", help="calibrate the hidden scale post hoc even for a "
                   "run trained with --act-bits")
    p.add_argument("--out", required=True, help="artifact directory to write")
    p.add_argument("--force", action="store_true")
    p.set_defaults(func=cmd_export)


def export_run(run, out, act_bits=None, input_bits=None, output_bits=None, force=False, weight_scale=None,
               spectral_scale=None, calibrate=False):
    """run dir -> artifact dir (with model.onnx); returns (artifact, footprint, task)."""
    from qornn.export.artifact import save_artifact
    from qornn.export.exporter import export_model
    from qornn.train.checkpoint import load_run

    model, task, cfg = load_run(run)
    art, fp = export_model(model, task, act_bits, input_bits, output_bits, provenance={"run": str(run)},
                           weight_scale=weight_scale, spectral_scale=spectral_scale, calibrate_hidden=calibrate)
    save_artifact(art, out, force=force, extra_files=_extra_files(art))
    return art, fp, task


def _extra_files(art) -> dict:
    try:
        from qornn.export.onnx_writer import onnx_bytes
    except ImportError:
        return {}
    return {"model.onnx": onnx_bytes(art)}


def cmd_export(args) -> int:
    art, fp, _ = export_run(args.run, args.out, args.act_bits, args.input_bits, args.output_bits, args.force,
                            args.weight_scale, args.spectral_scale, args.calibrate)
    cal, how = art.provenance["calibration"], art.provenance["scales"]
    print(f"wrote {args.out}")
    if cal is None:
        print(f"  trained     : s_h {how['hidden']}, s_x {how['input']}; weight scales {how['weights']}"
              f"{', spectral' if how['spectral'] else ''} (hidden-state QAT: no calibration)")
    else:
        print(f"  calibration : max|x| = {cal['x_absmax']:.4g}, max|h| = {cal['h_absmax']:.4g} "
              f"({cal['batches']}x{cal['batch_size']} sequences); weights {how['weights']}"
              f"{', spectral' if how['spectral'] else ''}")
    e_w, e_u = art.requant_errors()
    print(f"  scales      : s_x = {art.input_scale:.4g}, s_h = {art.hidden_scale:.4g} ({art.scale_mode})")
    print(f"  requant     : M_W/2^S_W = {art.m_w}/2^{art.shift_w} (relative error {e_w:.2g}), "
          f"M_U/2^S_U = {art.m_u}/2^{art.shift_u} (relative error {e_u:.2g})")
    print(f"  bits        : W {art.recurrent_bits}, U {art.input_weight_bits}, V {art.output_bits}, "
          f"inputs {art.input_bits}, hidden {art.act_bits}; widest accumulator {max(art.widths().values())} bits")
    print(f"  footprint   : {fp['integer_bytes']} B integer vs {fp['float32_bytes']} B float32 "
          f"({fp['compression']}x smaller, {fp['parameters']} parameters)")
    return 0


# -- simulate ------------------------------------------------------------------------------
def add_simulate(sub):
    p = sub.add_parser("simulate", help="run the integer reference simulator on a .npy input")
    p.add_argument("artifact")
    p.add_argument("--input", required=True, help="(batch, time, features) .npy: integer codes or real values")
    p.add_argument("--out", required=True, help=".npy file for the integer output codes")
    p.add_argument("--hidden-out", default=None, help="optional .npy file for the integer hidden codes")
    p.add_argument("--real", action="store_true", help="write real values (codes x scale) instead of codes")
    p.set_defaults(func=cmd_simulate)


def load_npy(path):
    import numpy as np

    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise QornnError(f"input file {path} not found") from None
    except (ValueError, OSError, EOFError) as e:
        raise QornnError(f"{path}: not a readable .npy array ({str(e).splitlines()[0]})") from None


def save_npy(path, array) -> None:
    import io

    import numpy as np

    from qornn.atomic import write_bytes_atomic

    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    try:
        write_bytes_atomic(path, buf.getvalue())
    except OSError as e:
        raise QornnError(f"cannot write {path}: {e.strerror}") from None


def cmd_simulate(args) -> int:
    from qornn.export.artifact import load_artifact
    from qornn.export.simulator import simulate

    art = load_artifact(args.artifact)
    x = load_npy(args.input)
    res = simulate(art, x, return_hidden=args.hidden_out is not None)
    save_npy(args.out, res.output_real if args.real else res.output)
    if args.hidden_out:
        save_npy(args.hidden_out, res.hidden_real if args.real else res.hidden)
    print(f"wrote {args.out}: outputs {res.output.shape} ({'real' if args.real else 'int64 codes'}, "
          f"scale {res.output_scale:.6g}) for {x.shape[0]} sequences of {x.shape[1]} steps")
    return 0


# -- demo ----------------------------------------------------------------------------------
def add_demo(sub):
    p = sub.add_parser("demo", help="train, export, simulate and verify a small copy-task QORNN")
    p.add_argument("--out", default="demo-out", help="where the demo writes its files (default demo-out)")
    p.add_argument("--steps", type=_positive, default=None, help="training steps (default: the demo's own)")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args) -> int:
    from qornn.demo import run_demo

    return run_demo(args.out, steps=args.steps)


# -- data ----------------------------------------------------------------------------------
def add_data(sub):
    p = sub.add_parser("data", help="fetch and cache the real datasets (MNIST, char-level Penn TreeBank)")
    p.add_argument("action", choices=["fetch"])
    p.add_argument("name", choices=["mnist", "ptb-char"])
    p.add_argument("--force", action="store_true", help="fetch again even if the cache is valid")
    p.set_defaults(func=cmd_data)


def cmd_data(args) -> int:
    from qornn.train.datasets import fetch

    print(f"{args.name}: {fetch(args.name, args.force)}")
    return 0


# -- report --------------------------------------------------------------------------------
def add_report(sub):
    p = sub.add_parser("report", help="PNG plots (training curves, singular values) and a markdown summary of a run")
    p.add_argument("run", help="run directory from `qornn train`")
    p.set_defaults(func=cmd_report)


def cmd_report(args) -> int:
    from qornn.train.report import write_report

    for path in write_report(args.run):
        print(f"wrote {path}")
    return 0


# -- bench ---------------------------------------------------------------------------------
def add_bench(sub):
    from qornn.reproduce import ALL_METHODS

    p = sub.add_parser("bench", help="reproduction grid: methods x weight bits, float / fake-quantized / integer")
    p.add_argument("--task", default="copy")
    p.add_argument("--methods", nargs="+", default=ALL_METHODS)
    p.add_argument("--bits", nargs="+", type=_positive, default=[3, 4, 5, 6, 7, 8])
    p.add_argument("--hidden", type=_positive, default=64)
    p.add_argument("--steps", type=_positive, default=1000)
    p.add_argument("--length", type=_positive, default=None)
    p.add_argument("--pixels-per-step", type=_positive, default=None)
    p.add_argument("--act-bits", type=_positive, default=12)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=_positive, default=64)
    p.add_argument("--eval-batches", type=_positive, default=4, help="held-out batches of 128 (0 = whole test split)")
    p.add_argument("--seed", type=_positive, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", required=True, help="directory for results.csv, results.md, sweep.png and the runs")
    p.set_defaults(func=cmd_bench)


def cmd_bench(args) -> int:
    from qornn.reproduce import run_grid

    opts = {k: v for k, v in (("length", args.length), ("pixels_per_step", args.pixels_per_step)) if v}
    run_grid(args.task, args.methods, args.bits, args.hidden, args.steps, args.out, act_bits=args.act_bits,
             lr=args.lr, batch_size=args.batch_size, seed=args.seed, task_options=opts,
             eval_batches=args.eval_batches or None, device=args.device)
    print((__import__("pathlib").Path(args.out) / "results.md").read_text())
    return 0


# -- hls -----------------------------------------------------------------------------------
def add_hls(sub):
    p = sub.add_parser("hls", help="generate the hls4ml firmware project of an artifact (C-sim, synthesis)")
    p.add_argument("artifact", help="artifact directory from `qornn export`")
    p.add_argument("--out", required=True, help="project directory to write")
    p.add_argument("--backend", default="Vitis", help="Vitis (default) or Vivado")
    p.add_argument("--reuse-factor", type=_positive, default=1, help="hls4ml reuse factor of the three matrix "
                   "products (default 1); must suit the layer sizes")
    p.add_argument("--strategy", default="Latency", help="Latency (default) or Resource (nnet::dense kernels)")
    p.add_argument("--part", default=None, help="FPGA part (default xcvu13p-flga2577-2-e)")
    p.add_argument("--clock-period", type=float, default=5, help="clock period in ns (default 5)")
    p.add_argument("--max-length", type=_positive, default=1024, help="longest sequence the core takes (default 1024)")
    p.add_argument("--io-type", default="io_stream", help="io_stream (default: one AXI-stream beat per time step) "
                   "or io_parallel (whole sequence as one array)")
    p.add_argument("--compile", action="store_true", help="also compile the C-simulation library (g++)")
    p.add_argument("--build", action="store_true", help="also run HLS synthesis (needs vitis_hls / vivado_hls)")
    p.add_argument("--force", action="store_true", help="replace an existing project directory")
    p.set_defaults(func=cmd_hls)


def cmd_hls(args) -> int:
    from qornn.hls import build_project, compile_project, read_meta, write_project

    prj = write_project(args.artifact, args.out, backend=args.backend, reuse_factor=args.reuse_factor,
                        part=args.part, clock_period=args.clock_period, max_length=args.max_length,
                        strategy=args.strategy, force=args.force, io_type=args.io_type)
    meta = read_meta(prj)
    o, mdl, t = meta["options"], meta["model"], meta["types"]
    print(f"wrote {prj}: hls4ml {o['backend']} project ({o['io_type']}, {o['strategy']}, reuse factor "
          f"{o['reuse_factor']}, part {o['part']}, clock {o['clock_period']} ns, max length {o['max_length']})")
    print(f"  core   : hidden {mdl['hidden_size']}, inputs {mdl['input_size']}, outputs {mdl['output_size']}, "
          f"{mdl['activation']}, {mdl['output_mode']}")
    print(f"  types  : x {t['x']}, h {t['h']}, W {t['W']}, U {t['U']}, V {t['V']}, acc {t['acc_w']} / {t['acc_u']}, "
          f"pre {t['pre']}, y {t['y']}")
    if args.compile:
        import time

        t0 = time.perf_counter()
        lib = compile_project(prj)
        print(f"  compile: C-simulation library {lib.name} built in {time.perf_counter() - t0:.1f} s")
    if args.build:
        report = build_project(prj)
        syn = report.get("CSynthesisReport") or {}
        keys = ("BestLatency", "WorstLatency", "IntervalMin", "LUT", "FF", "DSP", "BRAM_18K")
        found = ", ".join(f"{k} {syn[k]}" for k in keys if k in syn)
        print(f"  build  : synthesis done{': ' + found if found else ''} (reports in {prj}/qornn_core_prj)")
    else:
        print(f"  synthesize: cd {prj} && {'vitis_hls' if o['backend'] == 'Vitis' else 'vivado_hls'} -f build_prj.tcl")
    return 0


# -- verify --------------------------------------------------------------------------------
def add_verify(sub):
    p = sub.add_parser("verify", help="run ONNX / hls4ml C-simulation against the integer simulator, bit for bit")
    p.add_argument("artifact", help="artifact directory from `qornn export`")
    p.add_argument("--onnx", action="store_true", help="run ARTIFACT/model.onnx with onnxruntime")
    p.add_argument("--hls", default=None, metavar="PRJ_DIR", help="hls4ml project directory to C-simulate")
    p.add_argument("--sequences", type=_positive, default=64, help="random input sequences (default 64)")
    p.add_argument("--length", type=_positive, default=500, help="time steps per sequence (default 500)")
    p.add_argument("--seed", type=_positive, default=0)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_verify)


def cmd_verify(args) -> int:
    """Exit 0 when every executor equals the simulator on every integer, 1 on any mismatch."""
    from qornn.verify import format_table, verify

    report = verify(args.artifact, onnx=args.onnx, hls_dir=args.hls, sequences=args.sequences,
                    length=args.length, seed=args.seed)
    print(json.dumps(report, indent=2) if args.json else format_table(report))
    return 0 if report["ok"] else 1


COMMANDS = [add_train, add_export, add_simulate, add_verify, add_demo, add_data, add_report, add_bench, add_hls]


class _Parser(argparse.ArgumentParser):
    """Usage mistakes get one line (and a pointer to --help), like every other qornn error."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from qornn import __version__

    parser = _Parser(prog="qornn", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"qornn {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except QornnError as e:
        print(f"qornn: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("qornn: interrupted", file=sys.stderr)
        return 130
    except OSError as e:
        print(f"qornn: error: {e.filename or ''}{': ' if e.filename else ''}{e.strerror or e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
