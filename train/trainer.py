"""Training loop: Adam, a progress bar, metrics as JSON lines, an atomically written run directory."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from qornn.errors import QornnError

from .checkpoint import METRICS_FILE, save_run


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


def train(model, task, steps: int, out, batch_size: int = 64, lr: float = 1e-3, seed: int = 0,
          eval_every: int = 100, force: bool = False, device: str = "cpu", progress: bool = True) -> dict:
    """Train `model` on `task` for `steps` and write the run directory `out`; returns final metrics."""
    from qornn.atomic import commit_dir, prepare_dir

    if steps < 0:
        raise QornnError(f"--steps must be >= 0, got {steps}")
    tmp = prepare_dir(out, force, marker="config.json")
    try:
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        model.to(device).train()
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        log = open(tmp / METRICS_FILE, "w")
        t0 = time.time()
        bar = tqdm(range(1, steps + 1), desc="train", disable=not progress or steps == 0, dynamic_ncols=True)
        for step in bar:
            x, y = task.batch(batch_size, rng)
            loss = task.loss(model(x.to(device), quantized=model.train_quantized), y.to(device))
            reg = model.regularizer()
            total = loss if reg is None else loss + reg
            if not torch.isfinite(total):
                raise QornnError(f"training diverged at step {step} (loss {float(total)}); lower --lr")
            opt.zero_grad(set_to_none=True)
            total.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            model.before_step()
            opt.step()
            model.after_step()
            rec = {"step": step, "loss": loss.item(), "time": round(time.time() - t0, 3)}
            if reg is not None:
                rec["penalty"] = reg.item()
            if step % eval_every == 0 or step == steps:
                rec |= {f"eval_{k}": v for k, v in evaluate(model, task).items()}
                rec |= diagnostics(model)
                bar.set_postfix(loss=f"{rec['loss']:.4f}", **{task.metric: f"{rec.get('eval_' + task.metric, 0):.3f}"})
            log.write(json.dumps(rec) + "\n")
            log.flush()
        log.close()
        final = {"float": evaluate(model, task, quantized=False), "quantized": evaluate(model, task)}
        save_run(model.cpu(), task, {"steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed,
                                     "seconds": round(time.time() - t0, 2), "final": final}, tmp)
        commit_dir(tmp, Path(out))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


@torch.no_grad()
def diagnostics(model) -> dict:
    """Singular values of q(W) and its distance to orthogonality: what the paper tracks."""
    w = model.effective_weights()["W"].detach().double()
    s = torch.linalg.svdvals(w)
    eye = torch.eye(w.shape[0], dtype=w.dtype)
    return {"sigma_min": float(s.min()), "sigma_max": float(s.max()),
            "orth_err": float(torch.linalg.matrix_norm(w.t() @ w - eye))}
