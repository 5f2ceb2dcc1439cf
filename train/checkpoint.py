"""Run directories: weights in safetensors, configuration in JSON. Nothing is ever unpickled."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from qornn.errors import QornnError

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
METRICS_FILE = "metrics.jsonl"
RUN_FORMAT = "qornn-run"


def save_run(model, task, train_cfg: dict, tmp_dir: Path) -> None:
    """Write weights and config into `tmp_dir` (the caller renames it into place)."""
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(Path(tmp_dir) / WEIGHTS_FILE))
    cfg = {"format": RUN_FORMAT, "version": 1, "model": model.config, "task": task.config(), "train": train_cfg}
    (Path(tmp_dir) / CONFIG_FILE).write_text(json.dumps(cfg, indent=2) + "\n")


def load_run(run_dir):
    """Rebuild (model, task, config) from a run directory, refusing anything malformed."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from .model import QORNN
    from .tasks import make_task

    run_dir = Path(run_dir)
    cfg_path, w_path = run_dir / CONFIG_FILE, run_dir / WEIGHTS_FILE
    if not run_dir.is_dir():
        raise QornnError(f"run directory {run_dir} not found")
    if not cfg_path.is_file() or not w_path.is_file():
        raise QornnError(f"{run_dir} is not a qornn run: {CONFIG_FILE} or {WEIGHTS_FILE} missing")
    try:
        cfg = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise QornnError(f"{cfg_path}: not valid JSON") from None
    if not isinstance(cfg, dict) or cfg.get("format") != RUN_FORMAT:
        raise QornnError(f"{cfg_path}: not a qornn run config (field 'format' must be {RUN_FORMAT!r})")
    try:
        task_cfg = dict(cfg["task"])
        task = make_task(task_cfg.pop("name"), **task_cfg)
        model = QORNN(**cfg["model"])
    except (KeyError, TypeError) as e:
        raise QornnError(f"{cfg_path}: malformed config ({e})") from None
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
