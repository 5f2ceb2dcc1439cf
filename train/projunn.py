"""projUNN (Kiani, Balestriero, LeCun, Lloyd 2022): keep W orthogonal with rank-k updates.

After the optimizer proposes W + dW, only the best rank-k approximation dW_k of the update is
kept, and W is pulled back onto the orthogonal group:
  projUNN-D ("direct"):  W <- polar(W + dW_k)                    (nearest orthogonal matrix)
  projUNN-T ("tangent"): W <- expm(A) W,  A = skew(dW_k W^T)     (step along the tangent space)
Any optimizer (Adam here) proposes dW; the projection is what makes the method. For the sizes
of the paper (n <= a few hundred) the polar factor is computed by an SVD; the low-rank formula
of the projUNN paper gives the same matrix faster for large n.
"""

from __future__ import annotations

import torch


def low_rank(d: torch.Tensor, rank: int) -> torch.Tensor:
    """Best rank-k approximation (truncated SVD)."""
    u, s, vh = torch.linalg.svd(d, full_matrices=False)
    return (u[:, :rank] * s[:rank]) @ vh[:rank]


def polar(w: torch.Tensor) -> torch.Tensor:
    """Orthogonal polar factor U V^T of W = U S V^T: the nearest orthogonal matrix in Frobenius norm."""
    u, _, vh = torch.linalg.svd(w, full_matrices=False)
    return u @ vh


@torch.no_grad()
def projunn_update(w_old: torch.Tensor, w_new: torch.Tensor, rank: int, mode: str = "D") -> torch.Tensor:
    """Orthogonal matrix following the optimizer's proposal w_new from the orthogonal w_old."""
    d = low_rank((w_new - w_old).double(), rank)
    w0 = w_old.double()
    if mode == "D":
        out = polar(w0 + d)
    elif mode == "T":
        a = d @ w0.t()
        out = torch.linalg.matrix_exp((a - a.t()) / 2) @ w0
    else:
        raise ValueError(f"projUNN mode must be 'D' or 'T', got {mode!r}")
    return out.to(w_old.dtype)
