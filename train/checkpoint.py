"""Run directories: weights in safetensors, configuration in JSON. Nothing is ever unpickled.

Every field of a config.json (or a training plan) is checked for type and range before it reaches
a constructor (qornn.jsonio.field), and the memory the model needs is checked before it is
allocated, so an edited file is one QornnError line, never a traceback or a 4 TB allocation."""

from __future__ import annotations

import inspect
import json
import math
from pathlib import Path

import torch

from qornn.errors import QornnError
from qornn.jsonio import field, read_json

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
METRICS_FILE = "metrics.jsonl"
RUN_FORMAT = "qornn-run"
MAX_SIZE = 2**31 - 1

# QORNN constructor arguments as stored in config.json: (kind, may be null)
MODEL_FIELDS = {
    "input_size": (int, False), "hidden_size": (int, False), "output_size": (int, False),
    "weight_bits": (int, True), "activation": (str, False), "method": (str, False),
    "output_mode": (str, False), "output_bits": (int, True), "bjorck_iters": (int, False),
    "power_iters": (int, False), "projunn_rank": (int, False), "projunn_mode": (str, False),
    "penalty": (float, False), "recurrent_bits": (int, True), "input_weight_bits": (int, True),
    "narrow_range": (bool, False),
    # integer-aware training (train/act_quant.py, train/lsq.py)
    "act_bits": (int, True), "input_bits": (int, False), "act_scale": (str, False), "weight_scale": (str, False),
    "spectral_scale": (bool, False), "rounding": (str, False), "quant_noise": (float, False),
    # initialisations (train/inits.py)
    "recurrent_init": (str, False), "input_init": (str, False), "output_init": (str, False),
    "null_input": (int, True),
}
# fields newer than v1, with the value a run written before them means
OPTIONAL_MODEL_FIELDS = {"recurrent_bits": None, "input_weight_bits": None, "narrow_range": False,
                         "act_bits": None, "input_bits": 8, "act_scale": "lsq", "weight_scale": "max",
                         "spectral_scale": False, "rounding": "nearest", "quant_noise": 0.0,
                         "recurrent_init": "orthogonal", "input_init": "kaiming-uniform",
                         "output_init": "kaiming-uniform", "null_input": None}


def save_run(model, task, train_cfg: dict, tmp_dir: Path) -> None:
    """Write weights and config into `tmp_dir` (the caller renames it into place)."""
    from safetensors.torch import save as st_save

    from qornn.atomic import write_bytes_atomic

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    write_bytes_atomic(Path(tmp_dir) / WEIGHTS_FILE, st_save(state))
    cfg = {"format": RUN_FORMAT, "version": 1, "model": model.config, "task": task.config(), "train": train_cfg}
    write_bytes_atomic(Path(tmp_dir) / CONFIG_FILE, (json.dumps(cfg, indent=2) + "\n").encode())


def model_options(d, where: str) -> dict:
    """The QORNN constructor arguments of a saved config, each type-checked (ranges: QORNN itself)."""
    if not isinstance(d, dict):
        raise QornnError(f"{where}: must be an object")
    for k in d:
        if k not in MODEL_FIELDS:
            raise QornnError(f"{where}: unknown model setting {k!r}")
    opts = {}
    for k, (kind, nullable) in MODEL_FIELDS.items():
        if k in OPTIONAL_MODEL_FIELDS and k not in d:
            opts[k] = OPTIONAL_MODEL_FIELDS[k]
        elif nullable and d.get(k, 0) is None:
            opts[k] = None
        else:
            opts[k] = field(d, k, kind, where=where, **({"lo": 1, "hi": MAX_SIZE} if k.endswith("_size") else {}))
    return opts


def build_model(d, where: str, task=None, cfg=None):
    """A QORNN from saved settings; the memory it (and a training batch) needs is checked first."""
    from .memory import check_memory
    from .model import QORNN

    opts = model_options(d, f"{where} (model)")
    if task is not None and (opts["input_size"], opts["output_size"]) != (task.input_size, task.output_size):
        raise QornnError(f"{where}: model sizes {opts['input_size']} -> {opts['output_size']} do not fit task "
                         f"{task.name!r} ({task.input_size} -> {task.output_size})")
    check_memory(opts["hidden_size"], opts["input_size"], opts["output_size"],
                 cfg.batch_size if cfg else 0, getattr(task, "length", 1) if cfg else 0,
                 opts["output_mode"] == "every_step", min(opts["bjorck_iters"], 1000),
                 cfg.optimizer if cfg else "adam", cfg.device if cfg else "cpu")
    return QORNN(**opts)


def build_task(d, where: str):
    """A task from saved settings: its name, and options of the types its constructor defaults have."""
    from .tasks import TASKS, make_task

    where = f"{where} (task)"
    name = field(d, "name", str, where=where, choices=sorted(TASKS))
    params = inspect.signature(TASKS[name]).parameters
    opts = {}
    for k, v in d.items():
        if k == "name":
            continue
        p = params.get(k)
        if p is None or k == "data" or p.default is None or p.default is inspect.Parameter.empty:
            raise QornnError(f"{where}: unknown option {k!r} for task {name!r}")
        opts[k] = field(d, k, type(p.default), where=where,
                        **({"lo": 0, "hi": MAX_SIZE} if type(p.default) is int else {}))
    return make_task(name, **opts)


def check_train_section(d: dict, where: str) -> dict:
    """The `train` section of a finished run: its settings, time and final metrics (all numbers)."""
    from .config import TrainConfig

    TrainConfig.from_dict(d, where)
    field(d, "seconds", float, 0.0, where=where, default=0.0)
    for name, metrics in field(d, "final", dict, where=where, default={}).items():
        if name not in ("float", "quantized") or not isinstance(metrics, dict):
            raise QornnError(f"{where}: field 'train.final.{name}' is not a metrics object")
        for k in metrics:
            field(metrics, k, float, where=f"{where} (train.final.{name})")
    return d


def unfinished_hint(run_dir: Path) -> str | None:
    """Why `run_dir` is not a finished run, if it is (or has) a training in progress."""
    from .resume import PARTIAL_SUFFIX, lock_holder, partial_dir, run_of

    run = run_of(run_dir)
    pdir = run_dir if run_dir.name.endswith(PARTIAL_SUFFIX) else partial_dir(run_dir)
    if not pdir.is_dir():
        return None
    pid = lock_holder(pdir)
    if pid:
        return f"{run} is still being trained (by pid {pid}); wait until it ends"
    return f"{run} is unfinished (its training stopped; state in {pdir}): resume it with `qornn train --resume {run}`"


def load_run(run_dir, unfinished_ok: bool = False):
    """Rebuild (model, task, config) from a run directory, refusing anything malformed (and an
    unfinished training, unless `unfinished_ok`: the trainer checking its own RUN.partial)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    run_dir = Path(run_dir)
    cfg_path, w_path = run_dir / CONFIG_FILE, run_dir / WEIGHTS_FILE
    hint = unfinished_hint(run_dir)
    if hint and not unfinished_ok and (run_dir.name.endswith(".partial") or not cfg_path.is_file()):
        raise QornnError(hint)
    if not run_dir.is_dir():
        raise QornnError(f"run directory {run_dir} not found")
    if not cfg_path.is_file() or not w_path.is_file():
        raise QornnError(f"{run_dir} is not a qornn run: {CONFIG_FILE} or {WEIGHTS_FILE} missing")
    cfg = read_json(cfg_path, "run config")
    if not isinstance(cfg, dict) or cfg.get("format") != RUN_FORMAT:
        raise QornnError(f"{cfg_path}: not a qornn run config (field 'format' must be {RUN_FORMAT!r})")
    check_train_section(field(cfg, "train", dict, where=str(cfg_path)), str(cfg_path))
    task = build_task(field(cfg, "task", dict, where=str(cfg_path)), str(cfg_path))
    model = build_model(field(cfg, "model", dict, where=str(cfg_path)), str(cfg_path), task=task)
    try:
        state = load_file(str(w_path))
    except (SafetensorError, OSError, ValueError) as e:
        raise QornnError(f"{w_path}: corrupt weights file ({e})") from None
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise QornnError(f"{w_path}: weights do not match the config ({first[1].strip() if len(first) > 1 else first[0]})") from None
    for name, t in state.items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise QornnError(f"{w_path}: tensor '{name}' holds NaN or inf")
    model.eval()
    return model, task, cfg


def finite(x: float) -> float | None:
    return x if math.isfinite(x) else None
