"""`qornn report RUN_DIR`: plots a person would rather look at than read, and a short summary.

training.png  loss and the task metric over steps; sigma_min/max of q(W) and ||q(W)^T q(W) - I||_F
spectrum.png  singular values of the quantized recurrent matrix q(W) against the float W
memory.png    what q(W) does to a memory: its eigenvalue moduli, and the smallest and largest gain
              of its powers q(W)^t over the sequence length (sigma_min/max of q(W)^t), so that "this
              5-bit matrix forgets in 300 steps" is seen before deploying
report.md     the run's configuration, final metrics and orthogonality diagnostics
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from qornn.atomic import write_bytes_atomic
from qornn.errors import QornnError
from qornn.jsonio import field, read_jsonl

from .checkpoint import METRICS_FILE, load_run


def _save_fig(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)


def read_metrics(path: Path, metric: str) -> list[dict]:
    """metrics.jsonl, every record checked: an integer step, a loss, and numbers where plotted."""
    recs = read_jsonl(path, "metrics file")
    where = str(path)
    last = 0
    for i, r in enumerate(recs, 1):
        at = f"{where} line {i}"
        if not isinstance(r, dict):
            raise QornnError(f"{at}: a metrics record must be an object")
        step = field(r, "step", int, 1, where=at)
        if step <= last:
            raise QornnError(f"{at}: steps must increase (step {step} after {last})")
        last = step
        field(r, "loss", float, where=at)
        if f"eval_{metric}" in r:
            for k in (f"eval_{metric}", "sigma_max", "sigma_min", "orth_err"):
                field(r, k, float, where=at)
    return recs


def power_gains(w: torch.Tensor, length: int, points: int = 60) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(t, sigma_min(w^t), sigma_max(w^t)) at about `points` steps t in 1..length (log-spaced), in
    float64: the linear part of the recurrence (activation and hidden-state rounding left out)."""
    ts = np.unique(np.geomspace(1, max(1, length), points).astype(int))
    w = w.double()
    p, t_done, lo, hi = torch.eye(w.shape[0], dtype=torch.float64), 0, [], []
    for t in ts:
        p = torch.linalg.matrix_power(w, int(t - t_done)) @ p
        t_done = int(t)
        s = torch.linalg.svdvals(p)
        lo.append(float(s.min())), hi.append(float(s.max()))
    return ts, np.array(lo), np.array(hi)


def forgets_after(ts: np.ndarray, lo: np.ndarray, hi: np.ndarray, factor: float = 2.0) -> int | None:
    """The first step t at which some direction is shrunk or grown by more than `factor` (None: never
    within the sequence length)."""
    bad = np.flatnonzero((lo < 1 / factor) | (hi > factor))
    return int(ts[bad[0]]) if len(bad) else None


def write_report(run_dir) -> list[Path]:
    """Write training.png, spectrum.png and report.md into a run directory; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    model, task, cfg = load_run(run_dir)
    m = task.metric
    recs = read_metrics(run_dir / METRICS_FILE, m)
    with torch.no_grad():
        w_float = model.recurrent_float().double()
        w_q = model.effective_weights()["W"].double()
        s_f, s_q = torch.linalg.svdvals(w_float).numpy(), torch.linalg.svdvals(w_q).numpy()
        eye = torch.eye(model.hidden_size, dtype=torch.float64)
        orth_q = float(torch.linalg.matrix_norm(w_q.t() @ w_q - eye))
        orth_f = float(torch.linalg.matrix_norm(w_float.t() @ w_float - eye))

    title = f"{task.name}, {model.method}, hidden {model.hidden_size}, {model.weight_bits}-bit weights"
    written = []
    if recs:
        steps = [r["step"] for r in recs]
        ev = [r for r in recs if f"eval_{m}" in r]
        fig, ax = plt.subplots(1, 3, figsize=(15, 3.8))
        ax[0].plot(steps, [r["loss"] for r in recs], lw=0.8)
        ax[0].set_xlabel("step"), ax[0].set_ylabel("train loss"), ax[0].set_yscale("log")
        if ev:
            ev_steps = [r["step"] for r in ev]
            ax[1].plot(ev_steps, [r[f"eval_{m}"] for r in ev], "o-", color="C1")
            ax[2].plot(ev_steps, [r["sigma_max"] for r in ev], "o-", label="σ_max q(W)")
            ax[2].plot(ev_steps, [r["sigma_min"] for r in ev], "o-", label="σ_min q(W)")
            twin = ax[2].twinx()
            twin.plot(ev_steps, [r["orth_err"] for r in ev], "s--", color="C3", label="‖q(W)ᵀq(W) − I‖_F")
            twin.set_ylabel("‖q(W)ᵀq(W) − I‖_F"), twin.legend(loc="upper right")
        ax[1].set_xlabel("step"), ax[1].set_ylabel(f"eval {m} (quantized)")
        ax[2].set_xlabel("step"), ax[2].set_ylabel("singular value"), ax[2].legend(loc="upper left")
        fig.suptitle(title)
        fig.tight_layout(rect=(0, 0, 1, 0.94))
        _save_fig(fig, run_dir / "training.png")
        written.append(run_dir / "training.png")

    fig, ax = plt.subplots(figsize=(6, 3.8))
    ax.plot(np.arange(1, len(s_f) + 1), s_f, label="W (float, as trained)")
    ax.plot(np.arange(1, len(s_q) + 1), s_q, label=f"q(W), {model.weight_bits}-bit")
    ax.axhline(1.0, color="gray", lw=0.6, ls=":")
    ax.set_xlabel("index"), ax.set_ylabel("singular value"), ax.set_title(f"spectrum — {title}", fontsize=9)
    ax.legend()
    _save_fig(fig, run_dir / "spectrum.png")
    written.append(run_dir / "spectrum.png")

    length = int(getattr(task, "length", 0) or 784)
    with torch.no_grad():
        eig_q = np.sort(torch.linalg.eigvals(w_q).abs().numpy())[::-1]
        eig_f = np.sort(torch.linalg.eigvals(w_float).abs().numpy())[::-1]
        ts, lo, hi = power_gains(w_q, length)
        ts_f, lo_f, hi_f = power_gains(w_float, length)
    forget = forgets_after(ts, lo, hi)
    fig, ax = plt.subplots(1, 2, figsize=(12, 3.8))
    ax[0].plot(np.arange(1, len(eig_f) + 1), eig_f, label="W (float)")
    ax[0].plot(np.arange(1, len(eig_q) + 1), eig_q, label=f"q(W), {model.weight_bits}-bit")
    ax[0].axhline(1.0, color="gray", lw=0.6, ls=":")
    ax[0].set_xlabel("index"), ax[0].set_ylabel("|eigenvalue|"), ax[0].legend(fontsize=8)
    ax[1].fill_between(ts_f, lo_f, hi_f, alpha=0.25, color="C0", label="W (float): σ_min..σ_max of W^t")
    ax[1].fill_between(ts, lo, hi, alpha=0.35, color="C1", label="q(W): σ_min..σ_max of q(W)^t")
    ax[1].set_xscale("log"), ax[1].set_yscale("log"), ax[1].axhline(1.0, color="gray", lw=0.6, ls=":")
    ax[1].set_xlabel(f"steps t (sequence length {length})"), ax[1].set_ylabel("gain of h (linear part)")
    ax[1].legend(fontsize=8, loc="upper left")
    fig.suptitle(f"memory — {title}", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    _save_fig(fig, run_dir / "memory.png")
    written.append(run_dir / "memory.png")

    final = cfg.get("train", {}).get("final", {})
    lines = [f"# Run report: {run_dir.name}", "", f"{title}; task {json.dumps(task.config())}", "",
             "| model | " + " | ".join(final.get("float", {}).keys()) + " |",
             "|---|" + "---|" * len(final.get("float", {}))]
    for name in ("float", "quantized"):
        if name in final:
            lines.append(f"| {name} | " + " | ".join(f"{v:.4f}" for v in final[name].values()) + " |")
    lines += ["", f"- σ(q(W)) in [{s_q.min():.4f}, {s_q.max():.4f}]; σ(W) in [{s_f.min():.4f}, {s_f.max():.4f}]",
              f"- ‖q(W)ᵀq(W) − I‖_F = {orth_q:.4f}; ‖WᵀW − I‖_F = {orth_f:.4f}",
              f"- |eigenvalues of q(W)| in [{eig_q.min():.4f}, {eig_q.max():.4f}]; after {length} steps q(W)^t "
              f"scales h by {lo[-1]:.3g} .. {hi[-1]:.3g} (linear part); "
              + (f"**some direction is shrunk or grown 2x by step {forget}**" if forget else
                 f"no direction is shrunk or grown 2x within {length} steps"),
              f"- {len(recs)} logged steps; training time {cfg.get('train', {}).get('seconds', '?')} s", "",
              "![training](training.png)" if recs else "", "![spectrum](spectrum.png)", "![memory](memory.png)", ""]
    write_bytes_atomic(run_dir / "report.md", "\n".join(lines).encode())
    written.append(run_dir / "report.md")
    return written
