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
# Options of `qornn train` and where each is kept in a run's plan/config (checked against it on --resume).
TRAIN_OPTIONS = {
    "task": ("task", "name", "copy"), "method": ("model", "method", "ste-bjorck"),
    "hidden": ("model", "hidden_size", 64), "weight_bits": ("model", "weight_bits", 4),
    "output_bits": ("model", "output_bits", None), "activation": ("model", "activation", "modrelu"),
    "recurrent_bits": ("model", "recurrent_bits", None), "input_weight_bits": ("model", "input_weight_bits", None),
    "narrow_range": ("model", "narrow_range", False),
    "projunn_rank": ("model", "projunn_rank", 1), "projunn_mode": ("model", "projunn_mode", "D"),
    "penalty": ("model", "penalty", 0.1), "length": ("task", "length", None),
    "pixels_per_step": ("task", "pixels_per_step", None), "steps": ("train", "steps", 1000),
    "epochs": ("train", "epochs", None), "batch_size": ("train", "batch_size", 64), "lr": ("train", "lr", 1e-3),
    "orth_lr": ("train", "orth_lr", None), "optimizer": ("train", "optimizer", "adam"),
    "lr_schedule": ("train", "lr_schedule", "none"), "lr_decay_every": ("train", "lr_decay_every", 0),
    "lr_decay": ("train", "lr_decay", 0.1), "lr_warmup": ("train", "lr_warmup", 0),
    "clip_grad": ("train", "clip_grad", 1.0),
    "seed": ("train", "seed", 0), "device": ("train", "device", "cpu"),
    "checkpoint_every": ("train", "checkpoint_every", 100), "checkpoint_seconds": ("train", "checkpoint_seconds", 60.0),
    "readout_init": ("train", "readout_init", "none"),
    # integer-aware training (add_qat_options)
    "act_bits": ("model", "act_bits", None), "input_bits": ("model", "input_bits", 8),
    "act_scale": ("model", "act_scale", "lsq"), "weight_scale": ("model", "weight_scale", "max"),
    "spectral_scale": ("model", "spectral_scale", False), "rounding": ("model", "rounding", "nearest"),
    "quant_noise": ("model", "quant_noise", 0.0),
    # initialisations (train/inits.py)
    "recurrent_init": ("model", "recurrent_init", "orthogonal"),
    "input_init": ("model", "input_init", "kaiming-uniform"),
    "output_init": ("model", "output_init", "kaiming-uniform"), "null_input": ("model", "null_input", None),
}
INIT_OPTIONS = ("recurrent_init", "input_init", "output_init", "null_input")
# train/inits.RECURRENT_INITS, train/model.LAYER_INITS, train/config.READOUT_INITS and
# train/recipes.RECIPE_CHOICES, spelled here so that --help needs no torch (tests/test_inits.py pins them)
RECURRENT_INITS = ("orthogonal", "henaff", "cayley", "permutation", "rotation-grid", "hadamard")
LAYER_INITS = ("kaiming-uniform", "kaiming-normal", "zeros")
READOUT_INITS = ("none", "lstsq")
RECIPE_CHOICES = ("task", "none")


def add_train(sub):
    p = sub.add_parser("train", help="train a QORNN and write a run directory (crash-safe, resumable)")
    p.add_argument("--task", help="copy (default), adding, smnist, pmnist, ptb-char")
    p.add_argument("--method", help="ste-bjorck (default), ste-projunn, ste-pen, ptq-projunn, fp")
    p.add_argument("--hidden", type=_positive, help="hidden units (default 64)")
    p.add_argument("--weight-bits", type=_positive, help="bits of W and U, 1..8 (default 4)")
    p.add_argument("--recurrent-bits", type=_positive, help="bits of W alone (overrides --weight-bits)")
    p.add_argument("--input-weight-bits", type=_positive, help="bits of U alone (overrides --weight-bits)")
    p.add_argument("--narrow-range", action="store_true", default=None,
                   help="symmetric weight codes [-(2^(k-1)-1), 2^(k-1)-1]; 2 bits = ternary {-1, 0, +1}")
    p.add_argument("--output-bits", type=_positive, help="quantize V to this many bits during training")
    p.add_argument("--activation", help="modrelu (default) or relu")
    p.add_argument("--projunn-rank", type=_positive, help="rank k of projUNN updates (default 1)")
    p.add_argument("--projunn-mode", help="projUNN-D (polar, default) or T (tangent)")
    p.add_argument("--penalty", type=float, help="ste-pen orthogonality penalty weight (default 0.1)")
    p.add_argument("--length", type=_positive, help="sequence length (copy: total, i.e. delay T0 + 20; adding, ptb-char)")
    p.add_argument("--pixels-per-step", type=_positive, help="(s/p)MNIST pixels per step (default 1)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=_positive, help="optimizer steps (default 1000); 0 writes the initial model")
    budget.add_argument("--epochs", type=_positive, help="passes over a finite training set (smnist, pmnist, "
                        "ptb-char): ceil(train size / batch size) steps each")
    p.add_argument("--batch-size", type=_positive, help="(default 64)")
    p.add_argument("--optimizer", help="adam (default) or rmsprop")
    p.add_argument("--lr", type=float, help="learning rate (default 1e-3)")
    p.add_argument("--orth-lr", type=float, help="learning rate of the recurrent matrix W alone (default: --lr; "
                   "projUNN's references use lr/32)")
    p.add_argument("--lr-schedule", help="none (default) or step: multiply by --lr-decay every --lr-decay-every")
    p.add_argument("--lr-decay-every", type=_positive, help="epochs with --epochs, else steps, between decays")
    p.add_argument("--lr-decay", type=float, help="step-decay factor in [0, 1] (default 0.1)")
    p.add_argument("--lr-warmup", type=_positive, metavar="STEPS", help="raise the rates linearly over the first "
                   "STEPS steps (default 0: none); keeps Adam's first steps from undoing a --readout-init fit")
    p.add_argument("--clip-grad", type=float, help="clip the gradient norm to this (default 1.0; 0 = off)")
    p.add_argument("--seed", type=_positive, help="0 .. 2^64-1 (default 0)")
    p.add_argument("--device", help="cpu (default) or cuda[:N]")
    p.add_argument("--checkpoint-every", type=_positive, help="steps between checkpoints (default 100; 0 = time only)")
    p.add_argument("--checkpoint-seconds", type=float, help="seconds between checkpoints (default 60; 0 = steps only)")
    p.add_argument("--out", help="run directory to write (built in OUT.partial until training ends)")
    p.add_argument("--resume", metavar="RUN", help="continue the unfinished training of RUN (all settings come "
                   "from RUN.partial; other options must agree with them)")
    p.add_argument("--force", action="store_true", help="replace an existing run directory, or discard an "
                   "unfinished one and start over")
    p.add_argument("--threads", type=_positive, help="torch CPU threads (default: 1 on machines with up to 4 "
                   "cores, else half the cores; measured in docs/benchmarks.md)")
    p.add_argument("--recipe", choices=RECIPE_CHOICES, help="task (default): the settings that train --task "
                   "(docs/results.md), under every option given here; none: the trainer's historical defaults")
    g = p.add_argument_group("initialisation")
    g.add_argument("--recurrent-init", choices=RECURRENT_INITS, help="W: orthogonal (Haar), henaff, cayley, or a "
                   "grid init exact once quantized: permutation (2..8 bits), rotation-grid and hadamard "
                   "(narrow range; hadamard also 1 bit) (default: the task's recipe, else orthogonal)")
    g.add_argument("--input-init", choices=LAYER_INITS, help="U (default: the recipe's, else kaiming-uniform)")
    g.add_argument("--output-init", choices=LAYER_INITS, help="V (default: the recipe's, else kaiming-uniform)")
    g.add_argument("--readout-init", choices=READOUT_INITS, help="lstsq: fit V and c by least squares to "
                   "the untrained network's states before training (a warm start; default: the recipe's, else none)")
    g.add_argument("--null-input", type=_positive, metavar="K", help="input feature K (a blank or padding symbol) "
                   "drives nothing: its column of U is zero and untrained (copy's recipe: 0, the blank)")
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
    g.add_argument("--act-bits", type=_positive, help="quantize every step's hidden state to "
                   "this many bits in training (2..16), exactly as the integer loop will; export then uses "
                   "the trained scales (default: off, calibrate at export)")
    g.add_argument("--input-bits", type=_positive, help="input bits with --act-bits (default 8)")
    g.add_argument("--act-scale", help="hidden scale with --act-bits: lsq (learned, default) "
                   "or max (tracked running maximum)")
    g.add_argument("--weight-scale", help="weight scales: max (max-abs, default), lsq "
                   "(learned), po2 (powers of two: every requant multiplier 1, the loop only shifts)")
    g.add_argument("--spectral-scale", action="store_true", default=None, help="shrink the scale of q(W) so that "
                   "sigma_max(q(W)) <= 1 (same codes): a non-expansive quantized recurrence")
    g.add_argument("--rounding", help="weight rounding in training: nearest (default) "
                   "or stochastic (unbiased)")
    g.add_argument("--quant-noise", type=_rate, help="Quant-Noise: quantize only this random "
                   "fraction of the weights each training step (default 0: all)")


QAT_OPTIONS = ("act_bits", "input_bits", "act_scale", "weight_scale", "spectral_scale", "rounding", "quant_noise")


def _as_options(e: QornnError) -> QornnError:
    """A TrainConfig error about field 'clip_grad' speaks of --clip-grad on the command line."""
    import re

    return QornnError(re.sub(r"field '(\w+)'", lambda m: "--" + m.group(1).replace("_", "-"), str(e)))


def _train_value(args, dest):
    v = getattr(args, dest)
    if v is None and dest in getattr(args, "_recipe", {}):
        return args._recipe[dest]
    return TRAIN_OPTIONS[dest][2] if v is None else v


def _resolve_recipe(args) -> dict:
    """The task recipe's values for the options not given (train/recipes.py)."""
    from qornn.train.recipes import recipe

    given = {dest: getattr(args, dest) for dest in TRAIN_OPTIONS}
    return recipe(args.task or TRAIN_OPTIONS["task"][2], given, args.recipe or "task")


def build_model_and_task(args):
    """TrainConfig, task and model of `qornn train`: every value checked before anything is allocated."""
    import torch

    from qornn.train import QORNN
    from qornn.train.config import TrainConfig, resolve_epochs, train_size
    from qornn.train.tasks import make_task
    from qornn.train.trainer import check_budget

    args._recipe = _resolve_recipe(args)
    v = lambda dest: _train_value(args, dest)  # noqa: E731
    try:
        cfg = TrainConfig(**{dest: v(dest) for dest, (sec, _, _) in TRAIN_OPTIONS.items() if sec == "train"}).validate()
    except QornnError as e:
        raise _as_options(e) from None
    task = make_task(v("task"), length=v("length"), pixels_per_step=v("pixels_per_step"))
    train_size(task)  # a finite dataset is loaded (and its cache checked) now, before anything is written
    cfg = resolve_epochs(cfg, task)
    if cfg.epochs is not None and cfg.lr_schedule == "step":
        cfg.lr_decay_every *= cfg.steps // cfg.epochs
    if v("hidden") <= 0:
        raise QornnError(f"--hidden must be a positive integer, got {v('hidden')}")
    if cfg.device != "cpu" and not (cfg.device.startswith("cuda") and torch.cuda.is_available()):
        raise QornnError(f"device {cfg.device!r} is not available here (use --device cpu)")
    model_kw = dict(weight_bits=v("weight_bits"), activation=v("activation"), method=v("method"),
                    output_mode=task.output_mode, output_bits=v("output_bits"), projunn_rank=v("projunn_rank"),
                    projunn_mode=v("projunn_mode"), penalty=v("penalty"), recurrent_bits=v("recurrent_bits"),
                    input_weight_bits=v("input_weight_bits"), narrow_range=v("narrow_range"),
                    **{dest: v(dest) for dest in QAT_OPTIONS + INIT_OPTIONS})
    check_budget({"hidden_size": v("hidden"), "input_size": task.input_size, "output_size": task.output_size,
                  "output_mode": task.output_mode}, task, cfg)
    torch.manual_seed(cfg.seed)
    model = QORNN(task.input_size, v("hidden"), task.output_size, **model_kw)
    return model, task, cfg


def cmd_train(args) -> int:
    from qornn.train.threads import set_threads
    from qornn.train.trainer import TrainingInterrupted, resume_run, train

    try:
        set_threads(args.threads)
        if args.resume is not None:
            final, model, task, plan = _resume(args, resume_run)
            steps, out = plan["train"]["steps"], plan["out"]
        else:
            if args.out is None:
                raise QornnError("--out is required (or --resume RUN to continue an unfinished training)")
            model, task, cfg = build_model_and_task(args)
            final = train(model, task, out=args.out, force=args.force, **cfg.to_dict())
            steps, out = cfg.steps, args.out
    except TrainingInterrupted as e:
        print(f"qornn: {e.message}", file=sys.stderr)
        return 130
    m = task.metric
    print(f"wrote {out}: {m} float {final['float'][m]:.4f}, fake-quantized {final['quantized'][m]:.4f} "
          f"({task.name}, {model.method}, hidden {model.hidden_size}, {model.weight_bits}-bit weights, {steps} steps)")
    return 0


def _resume(args, resume_run):
    """--resume RUN: options given beside it must agree with the saved plan."""
    from pathlib import Path

    from qornn.jsonio import read_json
    from qornn.train.resume import PLAN_FILE, partial_dir, run_of

    run = run_of(Path(args.resume))
    if args.out is not None and Path(args.out) != run:
        raise QornnError(f"--out {args.out} conflicts with --resume {args.resume} (a run resumes in place)")
    pdir = partial_dir(run)
    if not pdir.is_dir():
        done = (run / "config.json").is_file()
        raise QornnError(f"{run} {'is already finished' if done else 'has no unfinished training'}: "
                         f"nothing to resume ({pdir} not found)")
    if not (pdir / PLAN_FILE).exists():
        raise QornnError(f"{pdir} was left before its training started (no {PLAN_FILE}): train again with --force")
    plan = read_json(pdir / PLAN_FILE, "training plan")
    for dest, (sec, key, _) in TRAIN_OPTIONS.items():
        given = getattr(args, dest)
        if given is None or not isinstance(plan, dict) or not isinstance(plan.get(sec), dict):
            continue
        saved = plan[sec].get(key)
        if dest == "lr_decay_every" and plan[sec].get("epochs"):
            given *= plan[sec]["steps"] // plan[sec]["epochs"]
        if given != saved:
            raise QornnError(f"--{dest.replace('_', '-')} {given} conflicts with the saved {key} {saved!r} of {run}; "
                             "--resume continues with the run's own settings (or train anew with --force)")
    final, model, task, plan = resume_run(run, force=args.force)
    return final, model, task, plan | {"out": str(run)}


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
    p.add_argument("--target-sqnr", type=float, default=None, metavar="DB",
                   help="pick the smallest hidden-state width whose SQNR reaches DB (overrides --act-bits)")
    p.add_argument("--out", required=True, help="artifact directory to write")
    p.add_argument("--force", action="store_true")
    p.set_defaults(func=cmd_export)


def export_run(run, out, act_bits=None, input_bits=None, output_bits=None, force=False, target_sqnr=None,
               weight_scale=None, spectral_scale=None, calibrate=False):
    """run dir -> artifact dir (with model.onnx); returns (artifact, costs, task, sqnr)."""
    import os

    from qornn.atomic import refuse_overlap
    from qornn.export.artifact import save_artifact
    from qornn.export.costs import energy_per_step, footprint
    from qornn.export.exporter import export_model
    from qornn.export.sqnr import hidden_sqnr, smallest_act_bits, weight_sqnr
    from qornn.train.checkpoint import load_run

    refuse_overlap(out, [run], "artifact directory")
    model, task, cfg = load_run(run)
    if target_sqnr is not None and model.act is not None and not calibrate:
        raise QornnError(f"--target-sqnr picks a calibrated hidden width, but this run was trained with "
                         f"--act-bits {model.act_bits}: export it as trained, or add --calibrate")

    def export(bits):
        # the run's name only: no path of the user's machine in a shipped artifact
        return export_model(model, task, bits, input_bits, output_bits,
                            provenance={"run": os.path.basename(os.path.normpath(str(run)))},
                            weight_scale=weight_scale, spectral_scale=spectral_scale,
                            calibrate_hidden=calibrate)[0]

    if target_sqnr is not None:
        _, art, h_sqnr = smallest_act_bits(model, task, target_sqnr, export)
    else:
        art = export(act_bits)
        h_sqnr = hidden_sqnr(model, task, art)
    sqnr = weight_sqnr(model, art) | {"h": h_sqnr}
    art.provenance["sqnr_db"] = {k: (v if v != float("inf") else "inf") for k, v in sqnr.items()}
    save_artifact(art, out, force=force, extra_files=_extra_files(art))
    return art, {"footprint": footprint(art), "energy": energy_per_step(art)}, task, sqnr


def _extra_files(art) -> dict:
    try:
        from qornn.export.onnx_writer import onnx_bytes
    except ImportError:
        return {}
    return {"model.onnx": onnx_bytes(art)}


def cmd_export(args) -> int:
    art, costs, _, sqnr = export_run(args.run, args.out, args.act_bits, args.input_bits, args.output_bits,
                                     args.force, args.target_sqnr, args.weight_scale, args.spectral_scale,
                                     args.calibrate)
    cal, how = art.provenance.get("calibration"), art.provenance.get("scales", {})
    fp, en = costs["footprint"], costs["energy"]
    e_w, e_u = art.requant_errors()
    spectral = ", spectral" if how.get("spectral") else ""
    print(f"wrote {args.out}")
    if cal:
        print(f"  calibration : max|x| = {cal['x_absmax']:.4g}, max|h| = {cal['h_absmax']:.4g} "
              f"({cal['batches']}x{cal['batch_size']} sequences); weights {how.get('weights')}{spectral}")
    else:
        print(f"  trained     : s_h {how.get('hidden')}, s_x {how.get('input')}; weight scales {how.get('weights')}"
              f"{spectral} (hidden-state QAT: no calibration)")
    print(f"  scales      : s_x = {art.input_scale:.4g}, s_h = {art.hidden_scale:.4g} ({art.scale_mode})")
    print(f"  requant     : M_W/2^S_W = {art.m_w}/2^{art.shift_w} (relative error {e_w:.2g}), "
          f"M_U/2^S_U = {art.m_u}/2^{art.shift_u} (relative error {e_u:.2g})")
    print(f"  bits        : W {art.recurrent_bits}, U {art.input_weight_bits}, V {art.output_bits}, "
          f"inputs {art.input_bits}, hidden {art.act_bits}; widest accumulator {max(art.widths().values())} bits")
    print("  SQNR        : " + ", ".join(f"{k} {v:.1f} dB" for k, v in sqnr.items()))
    print(f"  footprint   : {fp['integer_bytes']} B raw, {fp['huffman_bytes']} B Huffman-coded, vs "
          f"{fp['float32_bytes']} B float32 ({fp['compression']}x smaller raw, {fp['parameters']} parameters)")
    print(f"  energy      : ~{en['integer_pj']:.0f} pJ per step estimated (weights in SRAM) vs ~{en['float32_pj']:.0f} "
          f"pJ in float32 ({en['ratio']}x; 45 nm operation energies, Horowitz 2014)")
    return 0


# -- simulate ------------------------------------------------------------------------------
def add_simulate(sub):
    p = sub.add_parser("simulate", help="run the integer reference simulator on a .npy input")
    p.add_argument("artifact")
    p.add_argument("--input", required=True, help="(batch, time, features) .npy: integer codes or real values")
    p.add_argument("--out", required=True, help=".npy file for the integer output codes")
    p.add_argument("--hidden-out", default=None, help="optional .npy file for the integer hidden codes")
    p.add_argument("--real", action="store_true", help="write real values (codes x scale) instead of codes")
    p.add_argument("--force", action="store_true", help="replace existing output files")
    p.set_defaults(func=cmd_simulate)


def cmd_simulate(args) -> int:
    """Streams the input in blocks (memory bounded for any length); see qornn.simfiles."""
    from qornn.simfiles import simulate_files

    r = simulate_files(args.artifact, args.input, args.out, args.hidden_out, real=args.real, force=args.force)
    print(f"wrote {args.out}: outputs {r['output_shape']} ({'real' if args.real else 'int64 codes'}, "
          f"scale {r['output_scale']:.6g}) for {r['batch']} sequences of {r['time']} steps"
          + (f"; hidden {'values' if args.real else 'codes'} in {args.hidden_out}" if args.hidden_out else ""))
    return 0


# -- demo ----------------------------------------------------------------------------------
def add_demo(sub):
    p = sub.add_parser("demo", help="train, export, simulate and verify a small copy-task QORNN")
    p.add_argument("--out", default="demo-out", help="where the demo writes its files (default demo-out)")
    p.add_argument("--steps", type=_positive, default=None, help="training steps (default: the demo's own)")
    p.add_argument("--force", action="store_true", help="use --out even if it holds files the demo did not write")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args) -> int:
    from qornn.demo import run_demo

    return run_demo(args.out, steps=args.steps, force=args.force)


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

    p = sub.add_parser("bench", help="reproduction grid: methods x weight bits x seeds, float / fake-quantized / "
                       "integer; cells run on Ray and resume after a kill")
    p.add_argument("--task", default="copy")
    p.add_argument("--methods", nargs="+", default=ALL_METHODS)
    p.add_argument("--bits", nargs="+", type=_positive, default=[3, 4, 5, 6, 7, 8])
    p.add_argument("--hidden", type=_positive, default=64)
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=_positive, default=None, help="optimizer steps per cell (default 1000)")
    budget.add_argument("--epochs", type=_positive, default=None, help="epochs per cell (finite datasets)")
    p.add_argument("--length", type=_positive, default=None)
    p.add_argument("--pixels-per-step", type=_positive, default=None)
    p.add_argument("--act-bits", type=_positive, default=12, help="hidden-state bits of the exported cells (default 12)")
    p.add_argument("--qat", action="store_true", help="train the quantized cells with hidden-state QAT at --act-bits "
                   "(default: calibrate the hidden state after training)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--optimizer", default="adam", help="adam (default) or rmsprop")
    p.add_argument("--orth-lr", type=float, default=None, help="learning rate of W alone (default: --lr)")
    p.add_argument("--clip-grad", type=float, default=1.0, help="gradient-norm clip (default 1.0; 0 = off)")
    p.add_argument("--batch-size", type=_positive, default=64)
    p.add_argument("--eval-batches", type=_positive, default=4, help="held-out batches of 128 (0 = whole test split)")
    seeds = p.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=_positive, default=None, help="one seed (default 0)")
    seeds.add_argument("--seeds", type=_positive, nargs="+", default=None, help="several seeds: tables show mean ± std")
    p.add_argument("--device", default="cpu")
    p.add_argument("--ray-address", default=None, help="run the cells on an existing Ray cluster (default: a local "
                   "in-process Ray)")
    p.add_argument("--workers", type=_positive, default=None, help="cells at a time on the local Ray (default 2)")
    p.add_argument("--no-ray", action="store_true", help="run the cells one after another in this process")
    p.add_argument("--out", required=True, help="directory for results.csv, results.md, sweep.png and the runs")
    p.set_defaults(func=cmd_bench)


def cmd_bench(args) -> int:
    """Exit 0 when every cell succeeded; 1 when some failed (their errors are in results.md)."""
    from pathlib import Path

    from qornn.reproduce import run_grid

    if args.no_ray and (args.ray_address or args.workers):
        raise QornnError("--no-ray runs in this process: it takes neither --ray-address nor --workers")
    opts = {k: v for k, v in (("length", args.length), ("pixels_per_step", args.pixels_per_step)) if v}
    try:
        from qornn.train.config import TrainConfig

        TrainConfig(lr=args.lr, optimizer=args.optimizer, orth_lr=args.orth_lr, clip_grad=args.clip_grad,
                    batch_size=args.batch_size, device=args.device).validate()
        for s in args.seeds or [args.seed or 0]:
            TrainConfig(seed=s).validate()
    except QornnError as e:
        raise _as_options(e) from None
    rows = run_grid(args.task, args.methods, args.bits, args.hidden, args.steps, args.out, act_bits=args.act_bits,
                    lr=args.lr, batch_size=args.batch_size, seed=args.seed, seeds=args.seeds, task_options=opts,
                    eval_batches=args.eval_batches or None, device=args.device, use_ray=not args.no_ray,
                    ray_address=args.ray_address, workers=args.workers, epochs=args.epochs,
                    optimizer=args.optimizer, orth_lr=args.orth_lr, clip_grad=args.clip_grad, qat=args.qat)
    print((Path(args.out) / "results.md").read_text())
    failed = [r for r in rows if r["status"] != "ok"]
    if failed:
        print(f"qornn: error: {len(failed)} of {len(rows)} cells failed (see {Path(args.out) / 'results.md'})",
              file=sys.stderr)
        return 1
    return 0


# -- sensitivity ---------------------------------------------------------------------------
def add_sensitivity(sub):
    p = sub.add_parser("sensitivity", help="metric of the integer model with each tensor at lower widths; "
                       "a bit allocation under a budget")
    p.add_argument("run", help="run directory from `qornn train`")
    p.add_argument("--out", required=True, help="directory for sensitivity.md, sensitivity.png, sensitivity.json")
    p.add_argument("--act-bits", type=_positive, default=None,
                   help="base hidden-state width (default: as trained with --act-bits, else 8)")
    p.add_argument("--input-bits", type=_positive, default=None, help="base input width (default: as trained, else 8)")
    p.add_argument("--output-bits", type=_positive, default=None, help="base width of V (default: as trained, else 8)")
    p.add_argument("--budget-bits", type=_positive, default=None,
                   help="recommend W/U/V widths whose weights fit this many bits")
    p.add_argument("--eval-batches", type=_positive, default=4, help="held-out batches of 128 (0 = whole test split)")
    p.add_argument("--force", action="store_true")
    p.set_defaults(func=cmd_sensitivity)


def cmd_sensitivity(args) -> int:
    from qornn.sensitivity import run_sensitivity

    run_sensitivity(args.run, args.out, args.act_bits, args.input_bits, args.output_bits,
                    args.eval_batches or None, args.budget_bits, args.force)
    print((__import__("pathlib").Path(args.out) / "sensitivity.md").read_text().rstrip())
    print(f"wrote {args.out}/sensitivity.md, sensitivity.png, sensitivity.json")
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
    p.add_argument("--max-length", type=_positive, default=1024, help="io_parallel: longest sequence the core takes "
                   "(default 1024); io_stream has no maximum")
    p.add_argument("--io-type", default="io_stream", help="io_stream (default: the stream protocol, one beat per "
                   "time step with start/last flags) or io_parallel (whole sequence as one array)")
    p.add_argument("--compile", action="store_true", help="also compile the C-simulation library (g++)")
    p.add_argument("--build", action="store_true", help="also run HLS synthesis (needs vitis_hls / vivado_hls)")
    p.add_argument("--force", action="store_true", help="replace an existing project directory")
    p.set_defaults(func=cmd_hls)


def cmd_hls(args) -> int:
    from qornn.atomic import refuse_overlap
    from qornn.hls import build_project, compile_project, read_meta, write_project

    refuse_overlap(args.out, [args.artifact], "project directory")
    if args.build:  # refuse before anything is written when the HLS tool is missing
        from qornn.hls.project import require_tool

        require_tool(args.backend, args.out)
    prj = write_project(args.artifact, args.out, backend=args.backend, reuse_factor=args.reuse_factor,
                        part=args.part, clock_period=args.clock_period, max_length=args.max_length,
                        strategy=args.strategy, force=args.force, io_type=args.io_type)
    meta = read_meta(prj)
    o, mdl, t = meta["options"], meta["model"], meta["types"]
    length = ("stream protocol: one beat per step, no maximum length" if o["io_type"] == "io_stream"
              else f"max length {o['max_length']}")
    print(f"wrote {prj}: hls4ml {o['backend']} project ({o['io_type']}, {o['strategy']}, reuse factor "
          f"{o['reuse_factor']}, part {o['part']}, clock {o['clock_period']} ns, {length})")
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
    p.add_argument("--rtl", default=None, metavar="RTL_DIR", help="Verilog core directory (qornn rtl) to simulate "
                   "in Verilator")
    p.add_argument("--sequences", type=_positive, default=64, help="random input sequences (default 64)")
    p.add_argument("--length", type=_positive, default=None,
                   help="time steps per sequence (default 500); with --budget the longest length (default 3000)")
    p.add_argument("--budget", type=_positive, default=None, metavar="N",
                   help="compare at least N integers per executor, on random, boundary, saturating and extreme "
                        "sequences of lengths spread from 1 to --length (replaces --sequences)")
    p.add_argument("--seed", type=_positive, default=0)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_verify)


def cmd_verify(args) -> int:
    """Exit 0 when every executor equals the simulator on every integer, 1 on any mismatch."""
    from qornn.verify import format_table, verify

    report = verify(args.artifact, onnx=args.onnx, hls_dir=args.hls, sequences=args.sequences,
                    length=args.length, seed=args.seed, budget=args.budget, rtl_dir=args.rtl)
    print(json.dumps(report, indent=2) if args.json else format_table(report))
    return 0 if report["ok"] else 1


# -- rtl -----------------------------------------------------------------------------------
def add_rtl(sub):
    p = sub.add_parser("rtl", help="write the Verilog core of an artifact (Verilator test bench; open synthesis)")
    p.add_argument("artifact", help="artifact directory from `qornn export`")
    p.add_argument("--out", required=True, help="directory to write")
    p.add_argument("--arch", default="parallel", help="parallel (default: one step per clock, weights in logic) "
                   "or folded (P MAC lanes, weights in block RAM)")
    p.add_argument("--lanes", type=_positive, default=None, help="folded: MAC lanes P (default min(4, hidden))")
    p.add_argument("--target", default="ice40-up5k", help="ice40-up5k (default), ice40-hx8k, ecp5-25k, ecp5-85k, "
                   "xilinx (synth_xilinx counts, no place-and-route)")
    p.add_argument("--solver", default="auto", help="parallel: adder graphs of W.h, U.x, V.h: auto (default: alkaid "
                   "with csd fallback), alkaid (shared subexpressions, proven exact), csd (per-row CSD trees)")
    p.add_argument("--solver-dc", type=int, default=-1, help="parallel, alkaid: adder depth allowed above the "
                   "minimum (0: shallowest graph, higher Fmax; -1 default: no constraint, fewest adders)")
    p.add_argument("--synth", action="store_true", help="also run yosys + nextpnr and write report.json / report.md")
    p.add_argument("--force", action="store_true", help="replace an existing output directory")
    p.set_defaults(func=cmd_rtl)


def cmd_rtl(args) -> int:
    from qornn.atomic import refuse_overlap
    from qornn.rtl import read_meta, write_rtl

    refuse_overlap(args.out, [args.artifact], "RTL directory")
    out = write_rtl(args.artifact, args.out, arch=args.arch, lanes=args.lanes, target=args.target, force=args.force,
                    solver=args.solver, solver_dc=args.solver_dc)
    meta = read_meta(out)
    mdl, st, o = meta["model"], meta["stats"], meta["options"]
    arch = o["arch"] + (f", {st['lanes']} lanes + {st['output_lanes']} output lanes" if o["arch"] == "folded" else "")
    print(f"wrote {out}: {arch} Verilog core, hidden {mdl['hidden_size']}, inputs {mdl['input_size']}, "
          f"outputs {mdl['output_size']}, {st['cycles_per_step']} clock(s) per step")
    if "solver" in st:
        sv = st["solver"]
        print(f"  adders    : {st['adders']} (W.h {sv['W'].split(' ')[0]}, U.x {sv['U'].split(' ')[0]}, "
              f"V.h {sv['V'].split(' ')[0]}; --solver {sv['requested']})")
    print(f"  verify    : qornn verify {args.artifact} --rtl {out}")
    if args.synth:
        from qornn.rtl.synth import format_report, synthesize

        print(f"  synthesis : yosys + nextpnr for {o['target']} (can take minutes) ...", flush=True)
        report = synthesize(out)
        print(format_report(report), end="")
        if "error" in report:
            raise QornnError(f"synthesis did not finish: {report['error']}")
    return 0


COMMANDS = [add_train, add_export, add_simulate, add_verify, add_demo, add_data, add_report, add_bench,
            add_sensitivity, add_hls, add_rtl]


class _Parser(argparse.ArgumentParser):
    """Usage mistakes get one line (and a pointer to --help), like every other qornn error."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def _get_values(self, action, arg_strings):
        # argparse drops a lone '--' value (`--hidden=--`) and then returns [] without calling the
        # option's type: refuse it here, where the value enters, rather than in every command.
        if action.option_strings and action.nargs in (None, "+") and not [a for a in arg_strings if a != "--"]:
            self.error(f"argument {'/'.join(action.option_strings)}: expected a value")
        return super()._get_values(action, arg_strings)


def build_parser() -> argparse.ArgumentParser:
    from qornn import __version__

    parser = _Parser(prog="qornn", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"qornn {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv=None) -> int:
    """Run one command. Every failure ends as one line on stderr and a non-zero exit: QornnError
    (the user's input) exit 2, interrupt 130, anything unforeseen exit 3 with its type named
    (set QORNN_DEBUG=1 for the traceback)."""
    import os

    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        return args.func(args)
    except QornnError as e:
        print(f"qornn: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("qornn: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        print("qornn: error: out of memory (the sizes asked for do not fit this machine)", file=sys.stderr)
        return 2
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        print(f"qornn: error: {where}{e.strerror or _one_line(e)}", file=sys.stderr)
        return 2
    except SystemExit:
        raise
    except BaseException as e:  # a bug: still one line, never a traceback (unless asked for)
        if os.environ.get("QORNN_DEBUG"):
            raise
        print(f"qornn: internal error: {type(e).__name__}: {_one_line(e)} "
              "(please report it; QORNN_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 3


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= 400 else text[:397] + "..."


if __name__ == "__main__":
    sys.exit(main())
