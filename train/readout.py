"""A warm start of the read-out: V and c fitted in closed form to the untrained network's states.

An orthogonal recurrence with a grid init is already a long memory before any training: a linear
read-out of its integer hidden state separates the classes it will be trained on (pMNIST, hidden
170, 4-bit W, 8-bit h: 0.83 on held-out images before one step, docs/results.md). Training from
a random V first spends its steps finding that read-out. ``--readout-init lstsq`` solves it:
ridge regression of the targets (one-hot classes, or the regression target) on the states at the
output steps, then, for classes, one temperature chosen so that the softmax of the fitted scores
has the least cross-entropy on the same data (least squares scores are ~0..1, far too flat).

The states are those the trained model's forward computes (fake-quantized weights, and the
integer hidden state under hidden-state QAT), from batches of a generator seeded apart from the
training data's, so a run is reproduced by its seed and the fit sees no held-out data.
"""

from __future__ import annotations

import numpy as np
import torch

SEQUENCES = 2048   # fitted on this many training sequences
BATCH = 128
RIDGE = 1e-4       # relative to the mean diagonal of the Gram matrix


@torch.no_grad()
def fit_readout(model, task, seed: int, sequences: int = SEQUENCES, batch: int = BATCH) -> dict:
    """Set model.V and model.c from least squares on `sequences` training sequences; returns a
    summary (rows, temperature, fitted metric)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    rng = np.random.default_rng([seed, 0x5EAD])
    n = model.hidden_size
    classes = not task.metric == "mse"
    k = model.output_size
    gram = torch.zeros(n + 1, n + 1, dtype=torch.float64)
    cross = torch.zeros(n + 1, k, dtype=torch.float64)
    kept, rows = [], 0
    for _ in range(-(-sequences // batch)):
        x, y = task.batch(batch, rng)
        _, hidden = model(x.to(device), quantized=model.train_quantized, return_hidden=True)
        h = hidden if model.output_mode == "every_step" else hidden[:, -1]
        f = torch.cat([h.reshape(-1, n).double().cpu(), torch.ones(h.numel() // n, 1, dtype=torch.float64)], 1)
        t = (torch.nn.functional.one_hot(y.reshape(-1).long(), k).double() if classes
             else y.reshape(-1, k).double())
        gram += f.t() @ f
        cross += f.t() @ t
        rows += len(f)
        if classes and len(kept) < 4:
            kept.append((f, y.reshape(-1).long()))
    lam = RIDGE * float(gram.diagonal().mean())
    w = torch.linalg.solve(gram + lam * torch.eye(n + 1, dtype=torch.float64), cross)  # (n+1, k)
    temp = 1.0
    if classes:  # one temperature for the flat least-squares scores: a 1-D search on log scale
        f = torch.cat([a for a, _ in kept])
        y = torch.cat([b for _, b in kept])
        s = f @ w
        cands = [2.0 ** e for e in np.arange(-2, 10.01, 0.25)]
        ces = [float(torch.nn.functional.cross_entropy(c * s, y)) for c in cands]
        temp = cands[int(np.argmin(ces))]
    w = w * temp
    model.V.copy_(w[:n].t().to(model.V.dtype))
    model.c.copy_(w[n].to(model.c.dtype))
    model.train(was_training)
    out = {"rows": rows, "temperature": temp}
    if classes:
        out["fit_loss"] = min(ces)
    return out


def describe(summary: dict) -> str:
    t = summary["temperature"]
    extra = f", temperature {t:g}, fitted cross-entropy {summary['fit_loss']:.4f}" if "fit_loss" in summary else ""
    return f"read-out fitted by least squares on {summary['rows']} states{extra}"

