"""Training loop: Adam or RMSprop, a progress bar, metrics as JSON lines, crash-safe and resumable.

The run is built in `RUN.partial/` with periodic atomic checkpoints (train/resume.py) and renamed
to RUN when it ends, so SIGKILL at any moment loses at most one checkpoint interval and
`qornn train --resume RUN` continues to exactly the weights an uninterrupted run ends with.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from qornn.atomic import clean_stale
from qornn.errors import QornnError

from .checkpoint import METRICS_FILE, save_run
from .config import TrainConfig, resolve_epochs, steps_per_epoch
from .resume import Partial, is_no_space, lock_holder, partial_dir


class Diverged(QornnError):
    """The loss became NaN or inf: deterministic, so there is nothing worth resuming."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C: the state is checkpointed (or there was none worth keeping); `message` says which."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


@torch.no_grad()
def evaluate(model, task, batches: int | None = 4, batch_size: int = 128, seed: int = 12345,
             quantized: bool = True) -> dict:
    """Task metrics averaged over held-out batches (`tasks.eval_data`: the same data every call)."""
    from .tasks import eval_data

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    return_metrics = MetricMean()
    for x, y in eval_data(task, batches, batch_size, seed):
        return_metrics.add(task.metrics(model(x.to(device), quantized=quantized).cpu(), y), len(y))
    model.train(was_training)
    return return_metrics.result()


class MetricMean:
    """Sample-weighted mean of metric dicts (the last test batch may be smaller)."""

    def __init__(self):
        self.sums, self.n = {}, 0

    def add(self, metrics: dict, n: int) -> None:
        for k, v in metrics.items():
            if v is not None:
                self.sums[k] = self.sums.get(k, 0.0) + v * n
        self.n += n

    def result(self) -> dict:
        return {k: v / self.n for k, v in self.sums.items()}


def train(model, task, steps: int | None = 1000, out=None, batch_size: int = 64, lr: float = 1e-3, seed: int = 0,
          eval_every: int = 100, force: bool = False, device: str = "cpu", progress: bool = True,
          resume: bool = False, **options) -> dict:
    """Train `model` on `task` and write the run directory `out`; returns the final metrics.

    options: the other TrainConfig fields (epochs, optimizer, orth_lr, lr_schedule, lr_decay_every,
    lr_decay, clip_grad, checkpoint_every, checkpoint_seconds). With resume=True an unfinished
    run of the same plan in `out`.partial is continued; force discards a different one (and
    replaces an existing `out`)."""
    if out is None:
        raise QornnError("train: an output directory is required")
    cfg = TrainConfig(steps=1000 if steps is None else steps, batch_size=batch_size, lr=lr, seed=seed,
                      eval_every=eval_every, device=device, **options).validate()
    cfg = resolve_epochs(cfg, task)
    check_budget(model.config, task, cfg)
    out = Path(out)
    _check_out(out, force)
    plan = {"model": model.config, "task": task.config(), "train": cfg.to_dict(), "force": force}
    pdir = partial_dir(out)
    if pdir.exists():
        pid = lock_holder(pdir)
        if pid:
            raise QornnError(f"{out} is being trained by another process{f' (pid {pid})' if pid > 0 else ''}")
        part = Partial(out, create=False)
        same = _same_plan(part, plan)
        if resume and same:
            return _run(model, task, cfg, part, progress, force, resuming=True)
        if not force:
            part.release()
            raise QornnError(f"{pdir} holds an unfinished training{'' if same else ' with other settings'}; "
                             f"continue it with `qornn train --resume {out}`, or pass --force to start over")
        part.discard()
    part = Partial(out, create=True)
    return _run(model, task, cfg, part, progress, force, resuming=False, plan=plan)


def resume_run(out, progress: bool = True, force: bool = False) -> tuple[dict, object, object, dict]:
    """`qornn train --resume RUN`: rebuild model and task from RUN.partial/plan.json and continue.
    Returns (final metrics, model, task, plan)."""
    from .checkpoint import build_model, build_task

    part = Partial(out, create=False)
    try:
        plan = part.read_plan()
        where = str(part.dir / "plan.json")
        cfg = TrainConfig.from_dict(plan["train"], where)
        task = build_task(plan["task"], where)
        torch.manual_seed(cfg.seed)  # the init `qornn train` made (only used if no checkpoint was written)
        model = build_model(plan["model"], where, task=task, cfg=cfg)
        force = force or plan.get("force", False)
    except BaseException:
        part.release()
        raise
    return _run(model, task, cfg, part, progress, force, resuming=True), model, task, plan


def check_budget(model_cfg: dict, task, cfg: TrainConfig) -> None:
    """Memory the model and a batch need, checked before anything is allocated."""
    from .memory import check_memory

    check_memory(model_cfg["hidden_size"], model_cfg["input_size"], model_cfg["output_size"], cfg.batch_size,
                 getattr(task, "length", 1), model_cfg.get("output_mode") == "every_step",
                 model_cfg.get("bjorck_iters", 15), cfg.optimizer, cfg.device)


def _check_out(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise QornnError(f"output path {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        what = "an earlier run" if (out / "config.json").exists() else "other files"
        raise QornnError(f"output directory {out} already holds {what}; pass --force to replace it")


def _same_plan(part: Partial, plan: dict) -> bool:
    try:
        old = part.read_plan()
    except QornnError:
        return False
    return all(json.dumps(old.get(k), sort_keys=True) == json.dumps(plan[k], sort_keys=True)
               for k in ("model", "task", "train"))


def make_optimizer(model, cfg: TrainConfig):
    """Adam or RMSprop; W gets its own group (and learning rate) only when orth_lr is set."""
    params = list(model.parameters())
    if cfg.orth_lr is None:
        groups = [{"params": params, "base_lr": cfg.lr}]
    else:
        groups = [{"params": [model.W], "base_lr": cfg.orth_lr},
                  {"params": [p for p in params if p is not model.W], "base_lr": cfg.lr}]
    for g in groups:
        g["lr"] = g["base_lr"]
    if cfg.optimizer == "rmsprop":
        return torch.optim.RMSprop(groups, lr=cfg.lr)
    return torch.optim.Adam(groups, lr=cfg.lr)


def _run(model, task, cfg: TrainConfig, part: Partial, progress: bool, force: bool, resuming: bool,
         plan: dict | None = None) -> dict:
    """The loop, from a fresh partial dir (plan given) or from its newest checkpoint (resuming)."""
    done, log = False, None
    stop = _StopFlag()
    try:
        if not resuming:
            part.write_plan(plan)
        final_cfg = part.dir / "config.json"
        if resuming and final_cfg.exists() and (part.dir / "model.safetensors").exists():
            from .checkpoint import load_run  # killed while finishing: the run itself is complete

            load_run(part.dir, unfinished_ok=True)
            final = json.loads(final_cfg.read_text())["train"]["final"]
            part.finish(force)
            done = True
            return final
        if resuming and not part.checkpoints():  # killed while starting, before its first checkpoint:
            resuming, plan = False, plan or part.read_plan()  # start afresh (the model is the seeded init)
        device = cfg.device
        model.to(device).train()
        opt = make_optimizer(model, cfg)
        metrics_path = part.dir / METRICS_FILE
        if resuming:
            start, rng, metrics_bytes, elapsed = part.load(model, opt, cfg.optimizer)
            with open(metrics_path, "r+b" if metrics_path.exists() else "wb") as f:
                if f.seek(0, 2) < metrics_bytes:
                    raise QornnError(f"{metrics_path} is shorter than its checkpoint says; delete "
                                     f"{part.dir} and train again")
                f.truncate(metrics_bytes)
        else:
            torch.manual_seed(cfg.seed)
            if cfg.readout_init == "lstsq":
                from .readout import describe, fit_readout

                if progress:
                    tqdm.write("fitting the read-out by least squares ...")
                summary = fit_readout(model, task, cfg.seed)
                if progress:
                    tqdm.write(describe(summary))
            rng = np.random.default_rng(cfg.seed)
            start, elapsed = 0, 0.0
            metrics_path.write_bytes(b"")
            part.save(0, model, opt, rng, 0, 0.0, cfg.optimizer)
        log = open(metrics_path, "ab")
        clean_stale(part.out)
        t0 = time.time() - elapsed
        last_ckpt = time.time()
        params = list(model.parameters())
        bar = tqdm(range(start + 1, cfg.steps + 1), desc="train", initial=start, total=cfg.steps,
                   disable=not progress or cfg.steps == start, dynamic_ncols=True)
        with stop:
            for step in bar:
                for g in opt.param_groups:
                    g["lr"] = cfg.lr_at(step, g["base_lr"])
                x, y = task.batch(cfg.batch_size, rng)
                loss = task.loss(model(x.to(device), quantized=model.train_quantized), y.to(device))
                reg = model.regularizer()
                total = loss if reg is None else loss + reg
                if not torch.isfinite(total):
                    raise Diverged(f"training diverged at step {step} (loss {float(total)}); lower --lr")
                opt.zero_grad(set_to_none=True)
                total.backward()
                if cfg.clip_grad > 0:
                    torch.nn.utils.clip_grad_norm_(params, cfg.clip_grad)
                model.before_step()
                opt.step()
                model.after_step()
                rec = {"step": step, "loss": loss.item(), "time": round(time.time() - t0, 3)}
                if reg is not None:
                    rec["penalty"] = reg.item()
                if step % cfg.eval_every == 0 or step == cfg.steps:
                    rec |= {f"eval_{k}": v for k, v in evaluate(model, task).items()}
                    rec |= diagnostics(model)
                    bar.set_postfix(loss=f"{rec['loss']:.4f}",
                                    **{task.metric: f"{rec.get('eval_' + task.metric, 0):.3f}"})
                log.write((json.dumps(rec) + "\n").encode())
                log.flush()
                due = (cfg.checkpoint_every and step % cfg.checkpoint_every == 0) or \
                    (cfg.checkpoint_seconds and time.time() - last_ckpt >= cfg.checkpoint_seconds)
                # the last step is checkpointed too: an interrupt while finishing loses nothing
                if due or stop.set or step == cfg.steps:
                    part.save(step, model, opt, rng, log.tell(), time.time() - t0, cfg.optimizer)
                    last_ckpt = time.time()
                if stop.set and step < cfg.steps:
                    raise KeyboardInterrupt
            log.close()
            final = {"float": evaluate(model, task, quantized=False), "quantized": evaluate(model, task)}
            train_cfg = cfg.to_dict() | {"steps_per_epoch": steps_per_epoch(task, cfg.batch_size),
                                         "seconds": round(time.time() - t0, 2), "final": final}
            save_run(model.cpu(), task, train_cfg, part.dir)
            part.finish(force)
            done = True
        return final
    except BaseException as e:
        if log is not None:
            try:
                log.close()  # its unwritten tail (a full disk) is dropped: resume cuts metrics back anyway
            except OSError:
                pass
        if not done:
            _abandon(part, e, resuming)
        raise _translate(e, part) from None
    finally:
        part.release()


def _abandon(part: Partial, e: BaseException, resuming: bool) -> None:
    """Keep a partial dir that holds progress (a checkpoint past step 0, or one being resumed)
    unless the failure is deterministic (divergence); otherwise leave nothing behind."""
    keep = (resuming or bool(part.last_step)) and not isinstance(e, Diverged)
    if keep:
        part._clean_temps()
        part.release()
    else:
        part.discard()


def _translate(e: BaseException, part: Partial) -> BaseException:
    kept = part.dir.exists()
    at = f" at step {part.last_step}" if part.last_step else ""
    how = (f"; the checkpoint{at} is kept in {part.dir}: continue with "
           f"`qornn train --resume {part.out}`") if kept else ""
    if isinstance(e, KeyboardInterrupt):
        return TrainingInterrupted(f"interrupted{how or ' (nothing written)'}")
    if is_no_space(e):
        return QornnError(f"no space left on device while writing {e.filename or part.dir}{how}")
    if isinstance(e, QornnError):
        return e
    if isinstance(e, OSError):
        return QornnError(f"{e.filename or part.dir}: {e.strerror or e}{how}")
    return e


class _StopFlag:
    """While training, the first Ctrl-C asks the loop to checkpoint and stop at the end of the
    current step (no torn optimizer step); a second one interrupts at once."""

    def __init__(self):
        self.set = False
        self._old = None

    def _handler(self, signum, frame):
        if self.set:
            raise KeyboardInterrupt
        self.set = True

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            try:
                self._old = signal.signal(signal.SIGINT, self._handler)
            except ValueError:
                self._old = None
        return self

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
        return False


@torch.no_grad()
def diagnostics(model) -> dict:
    """Singular values of q(W) and its distance to orthogonality: what the paper tracks."""
    w = model.effective_weights()["W"].detach().double()
    s = torch.linalg.svdvals(w)
    eye = torch.eye(w.shape[0], dtype=w.dtype, device=w.device)
    return {"sigma_min": float(s.min()), "sigma_max": float(s.max()),
            "orth_err": float(torch.linalg.matrix_norm(w.t() @ w - eye))}
