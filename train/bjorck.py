"""STE-Björck parametrization: spectral normalisation by power iteration, then Björck iterations.

Björck's iteration W <- (1 + b) W - b W W^T W (b = 0.5) converges to the nearest orthogonal
matrix when the spectral norm is at most 1, hence the normalisation first. Gradients flow
through every iteration by autograd (the paper's STE-Björck differentiates through Björck
and uses the STE only for the quantizer).
"""

from __future__ import annotations

import torch


def spectral_norm_estimate(w: torch.Tensor, iters: int = 3, u: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Largest singular value by power iteration; returns (sigma, u) so u can warm-start the next call."""
    with torch.no_grad():
        if u is None:
            u = torch.randn(w.shape[0], device=w.device, dtype=w.dtype)
        for _ in range(iters):
            v = torch.nn.functional.normalize(w.t() @ u, dim=0)
            u = torch.nn.functional.normalize(w @ v, dim=0)
    sigma = torch.dot(u, w @ v)  # differentiable in w, as in spectral_norm
    return sigma, u


def bjorck(w: torch.Tensor, iters: int = 15, beta: float = 0.5) -> torch.Tensor:
    """Björck orthonormalisation; expects a spectral norm <= 1 (see `spectral_norm_estimate`)."""
    for _ in range(iters):
        w = (1 + beta) * w - beta * (w @ (w.t() @ w))
    return w


def orthogonality_error(w: torch.Tensor) -> float:
    """||W^T W - I||_F."""
    eye = torch.eye(w.shape[1], device=w.device, dtype=w.dtype)
    return float(torch.linalg.matrix_norm(w.t() @ w - eye))
