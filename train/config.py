"""The training budget and optimizer settings, validated where they enter (CLI, API or a saved file).

One `TrainConfig` is what `qornn train` stores in a run's config.json and what `--resume` reads
back, so every field is checked the same way whichever door it came through: a bad value is one
QornnError line naming the field. Defaults are the trainer's historical ones (Adam, lr 1e-3,
gradient-norm clipping at 1.0, no schedule, one learning rate for every parameter).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

from qornn.errors import QornnError
from qornn.jsonio import field

OPTIMIZERS = ("adam", "rmsprop")
READOUT_INITS = ("none", "lstsq")  # --readout-init (train/readout.py)
SCHEDULES = ("none", "step")
MAX_SEED = 2**64 - 1          # torch.manual_seed refuses anything larger
MAX_STEPS = 10**12            # far beyond any budget; keeps every count a machine integer
MAX_BATCH = 2**31 - 1


@dataclass
class TrainConfig:
    steps: int = 1000
    epochs: int | None = None            # if set, steps = epochs * steps_per_epoch (finite datasets)
    batch_size: int = 64
    lr: float = 1e-3
    orth_lr: float | None = None         # learning rate of W alone (projUNN uses lr / 32); None = lr
    optimizer: str = "adam"
    lr_schedule: str = "none"            # "step": lr * lr_decay ** (step // lr_decay_every)
    lr_decay_every: int = 0              # in optimizer steps
    lr_decay: float = 0.1
    lr_warmup: int = 0                   # steps of linear warm-up: lr * min(1, step / lr_warmup)
    clip_grad: float = 1.0               # max gradient norm; 0 = no clipping
    seed: int = 0
    eval_every: int = 100
    checkpoint_every: int = 100          # steps between checkpoints (0: time-based only)
    checkpoint_seconds: float = 60.0     # seconds between checkpoints (0: step-based only)
    device: str = "cpu"
    readout_init: str = "none"           # "lstsq": V, c fitted to the untrained states (train/readout.py)

    def validate(self) -> "TrainConfig":
        self.from_dict(self.to_dict(), where="")
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict, where: str = "") -> "TrainConfig":
        """Build from a dict (a saved config or CLI values), checking the type and range of every field."""
        pre = f"{where}: " if where else ""
        if not isinstance(d, dict):
            raise QornnError(f"{pre}training settings must be an object")
        known = {f.name for f in fields(cls)}
        for k in d:
            if k not in known and k not in ("seconds", "final", "steps_per_epoch", "force"):
                raise QornnError(f"{pre}unknown training setting {k!r}")
        dflt = cls()
        # a field missing from an older run's config takes its default (the trainer's behaviour then)
        f = lambda name, kind, lo=None, hi=None, **kw: field(  # noqa: E731
            d, name, kind, lo, hi, where=where, default=getattr(dflt, name), **kw)
        epochs = d.get("epochs")
        c = cls(
            steps=f("steps", int, 0, MAX_STEPS),
            epochs=None if epochs is None else f("epochs", int, 1, MAX_STEPS),
            batch_size=f("batch_size", int, 1, MAX_BATCH),
            lr=_rate(d, "lr", where),
            orth_lr=None if d.get("orth_lr") is None else _rate(d, "orth_lr", where),
            optimizer=f("optimizer", str, choices=OPTIMIZERS),
            lr_schedule=f("lr_schedule", str, choices=SCHEDULES),
            lr_decay_every=f("lr_decay_every", int, 0, MAX_STEPS),
            lr_decay=f("lr_decay", float, 0.0, 1.0),
            lr_warmup=f("lr_warmup", int, 0, MAX_STEPS),
            clip_grad=f("clip_grad", float, 0.0, 1e12),
            seed=f("seed", int, 0, MAX_SEED),
            eval_every=f("eval_every", int, 1, MAX_STEPS),
            checkpoint_every=f("checkpoint_every", int, 0, MAX_STEPS),
            checkpoint_seconds=f("checkpoint_seconds", float, 0.0, 1e9),
            device=f("device", str),
            readout_init=f("readout_init", str, choices=READOUT_INITS),
        )
        if c.lr_schedule == "step" and c.lr_decay_every < 1:
            raise QornnError(f"{pre}the step schedule needs field 'lr_decay_every' >= 1")
        if not (c.device == "cpu" or c.device == "cuda" or c.device.startswith("cuda:")):
            raise QornnError(f"{pre}device must be cpu or cuda[:N], got {c.device!r}")
        return c

    def lr_at(self, step: int, base: float) -> float:
        """Learning rate for optimizer step `step` (1-based): a pure function of the step, so a
        resumed run needs no scheduler state beyond the step count."""
        if self.lr_warmup and step < self.lr_warmup:
            base = base * step / self.lr_warmup
        if self.lr_schedule == "step":
            return base * self.lr_decay ** ((step - 1) // self.lr_decay_every)
        return base


def _rate(d: dict, name: str, where: str) -> float:
    v = field(d, name, float, where=where, default=1e-3)
    if not (v > 0 and math.isfinite(v)):
        pre = f"{where}: " if where else ""
        raise QornnError(f"{pre}field '{name}' must be a finite number > 0, got {v!r}")
    return v


def steps_per_epoch(task, batch_size: int) -> int | None:
    """Optimizer steps in one pass over a finite training set (None for generated tasks).

    A pass is ceil(N / batch) batches; batches are drawn at random from the training split
    (with replacement, as every task samples), so an "epoch" is a budget, not a permutation."""
    n = train_size(task)
    return None if n is None else -(-n // batch_size)


def train_size(task) -> int | None:
    """Training examples of a finite dataset: images for (s/p)MNIST, non-overlapping windows for PTB."""
    if hasattr(task, "train_ids"):
        return max(1, (len(task.train_ids) - 1) // task.length)
    if hasattr(task, "eval_batches") and hasattr(task, "data"):
        return len(task.data()[0])
    return None


def resolve_epochs(cfg: TrainConfig, task) -> TrainConfig:
    """With `epochs`, set `steps` from the task's training-set size; refuse epochs on generated tasks."""
    if cfg.epochs is None:
        return cfg
    spe = steps_per_epoch(task, cfg.batch_size)
    if spe is None:
        raise QornnError(f"--epochs needs a finite dataset (smnist, pmnist, ptb-char); task {task.name!r} is "
                         "generated afresh every batch: give --steps")
    cfg.steps = cfg.epochs * spe
    if cfg.steps > MAX_STEPS:
        raise QornnError(f"{cfg.epochs} epochs is {cfg.steps} steps, more than {MAX_STEPS}")
    return cfg
