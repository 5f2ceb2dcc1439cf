"""The QORNN recurrence with a hand-written backward-through-time.

    z_t = h_{t-1} W^T + ux_t,    h_t = act(z_t),    act = modReLU(., b) or ReLU

Under autograd a Python time loop records ~5 nodes per step, and the backward then runs
~10 small kernels per step plus per-step weight-gradient matmuls. Here the forward loop runs
without autograd (one matmul and an in-place activation per step, into a preallocated buffer),
and the backward loop runs one matmul and one multiply per step; the weight gradient is ONE
(n x B*T) @ (B*T x n) matmul at the end, and the bias / input gradients are vectorised too.

Nothing but the hidden states is saved: for both activations the derivative is a function of
h_t alone (see `_Recurrence`), so no pre-activation or mask is kept per step.

The forward output is bitwise the same as the reference loop of `QORNN.forward`
(``z = h @ W.t() + ux[:, t]; h = modrelu(z, b)``): the same matmul, the same elementwise
operations in the same order. The gradients are those autograd gives for that loop, including
its conventions at the kinks (grad of sign is 0, grad of |z| at 0 is 0, grad of relu at 0 is
0); they agree with autograd's up to the summation order of the sums over batch and time.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

ACTIVATIONS = ("modrelu", "relu")


_ALIGN = 64  # bytes


def _aligned_steps(like: torch.Tensor, T: int, B: int, n: int) -> torch.Tensor:
    """An empty (T, B, n) tensor whose every time slice starts on a 64-byte boundary.

    MKL's gemm result depends on the alignment of its operands (no conditional numerical
    reproducibility by default): a slice at an odd offset gives different last bits than the
    freshly allocated (aligned) ``h`` of the reference loop. Padding each step to a multiple of
    64 bytes keeps the forward bitwise equal to the reference; when B*n is already a multiple
    (e.g. 64 x 128) the buffer is plain contiguous."""
    per = max(1, _ALIGN // like.element_size())
    step = -(-(B * n) // per) * per
    if step == B * n:
        return like.new_empty(T, B, n)
    return like.new_empty(T * step).as_strided((T, B, n), (step, n, 1))


def _forward_loop(ux: torch.Tensor, W: torch.Tensor, b: torch.Tensor | None, h0: torch.Tensor | None) -> torch.Tensor:
    """Hidden states, time-major with the initial state in front: Hs[0] = h0, Hs[t+1] = h_t."""
    B, T, n = ux.shape
    Hs = _aligned_steps(ux, T + 1, B, n)
    if h0 is None:
        Hs[0].zero_()
    else:
        Hs[0].copy_(h0)
    Wt = W.t()
    hs, us = Hs.unbind(0), ux.unbind(1)  # views made once, not per step
    mm = torch.mm
    h = hs[0]
    if b is None:
        for z, u in zip(hs[1:], us):
            mm(h, Wt, out=z)  # same gemm as the reference's h @ W.t() (no addmm: bitwise equality)
            z.add_(u)
            z.relu_()
            h = z
    else:
        s = ux.new_empty(B, n)
        sign = torch.sign
        for z, u in zip(hs[1:], us):
            mm(h, Wt, out=z)
            z.add_(u)
            sign(z, out=s)  # h = sign(z) * relu(|z| + b), in place
            z.abs_().add_(b).relu_().mul_(s)
            h = z
    return Hs


def _backward_loop(dH: torch.Tensor, mask: torch.Tensor, W: torch.Tensor, need_dh0: bool):
    """dZ (time-major, T x B x n) and dh0 from dH (batch-first) and the activation mask."""
    T, B, n = mask.shape
    dZ = torch.empty_like(mask)
    ds, ms, gs = dZ.unbind(0), mask.unbind(0), dH.unbind(1)
    addmm = torch.addmm
    torch.mul(gs[T - 1], ms[T - 1], out=ds[T - 1])
    for t in range(T - 2, -1, -1):
        d = ds[t]
        addmm(gs[t], ds[t + 1], W, out=d)  # dh_t = dH_t + dz_{t+1} W
        d.mul_(ms[t])  # dz_t = dh_t * act'(z_t)
    dh0 = dZ[0] @ W if need_dh0 else None
    return dZ, dh0


class _Recurrence(torch.autograd.Function):
    """Derivatives from h alone (h = act(z)):

    ReLU:    dh/dz = 1[z > 0] = 1[h != 0].
    modReLU: h = sign(z) relu(|z| + b); autograd gives dh/dz = sign(z)^2 1[|z|+b > 0] and
             dh/db = sign(z) 1[|z|+b > 0] (sign' = 0, |.|' (0) = 0, relu'(0) = 0). Both are 0 at
             z = 0, and h != 0 exactly when z != 0 and |z| + b > 0 (a positive float sum stays
             positive), so dh/dz = 1[h != 0] and dh/db = sign(h).
    """

    @staticmethod
    def forward(ctx, ux, W, b, h0):
        with torch.no_grad():
            Hs = _forward_loop(ux, W, b, h0)
        ctx.save_for_backward(Hs, W)
        ctx.has_b = b is not None
        ctx.has_h0 = h0 is not None
        out = Hs[1:].transpose(0, 1)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, dH):
        Hs, W = ctx.saved_tensors
        T, B, n = Hs.shape[0] - 1, Hs.shape[1], Hs.shape[2]
        H = Hs[1:]
        # act'(z_t) = 1[h_t != 0] = |sign(h_t)| (for ReLU h >= 0, so sign(h) is the mask already).
        # One (T, B, n) buffer serves as the mask and then, for modReLU, as sign(h) for db.
        mask = torch.sign(H)
        if ctx.has_b:
            mask.abs_()
        need_dh0 = ctx.has_h0 and ctx.needs_input_grad[3]
        dZ, dh0 = _backward_loop(dH, mask, W, need_dh0)
        dux = dZ.transpose(0, 1) if ctx.needs_input_grad[0] else None
        dW = None
        if ctx.needs_input_grad[1]:
            dW = dZ.reshape(T * B, n).t() @ Hs[:-1].reshape(T * B, n)  # sum_t dz_t^T h_{t-1}
        db = None
        if ctx.has_b and ctx.needs_input_grad[2]:
            db = torch.sign(H, out=mask).mul_(dZ).sum((0, 1))  # dh/db = sign(h)
        return dux, dW, db, dh0


def recurrence(ux: torch.Tensor, W: torch.Tensor, b: torch.Tensor | None = None,
               activation: str = "modrelu", h0: torch.Tensor | None = None) -> torch.Tensor:
    """Hidden states H (B, T, n) of h_t = act(h_{t-1} W^T + ux_t), h_{-1} = h0 (zeros if None).

    ux: (B, T, n) input contributions (x @ U^T); W: (n, n); b: (n,) modReLU bias (required for
    'modrelu', must be None for 'relu'); h0: (B, n) or None. Differentiable in ux, W, b, h0.
    The returned tensor is a (non-contiguous) view of a time-major buffer.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; choose one of {', '.join(ACTIVATIONS)}")
    if ux.dim() != 3:
        raise ValueError(f"ux must be (batch, time, hidden), got shape {tuple(ux.shape)}")
    B, T, n = ux.shape
    if W.shape != (n, n):
        raise ValueError(f"W must be ({n}, {n}), got {tuple(W.shape)}")
    if activation == "modrelu":
        if b is None or b.shape != (n,):
            raise ValueError(f"modrelu needs a bias of shape ({n},)")
    elif b is not None:
        raise ValueError("relu takes no bias (b must be None)")
    if h0 is not None and h0.shape != (B, n):
        raise ValueError(f"h0 must be ({B}, {n}), got {tuple(h0.shape)}")
    for name, x in (("W", W), ("b", b), ("h0", h0)):
        if x is not None and (x.dtype != ux.dtype or x.device != ux.device):
            raise ValueError(f"{name} is {x.dtype} on {x.device}, ux is {ux.dtype} on {ux.device}")
    if T == 0:
        raise ValueError("ux has no time steps")
    return _Recurrence.apply(ux, W, b, h0)


# -- the quantized-hidden-state recurrence (hidden-state QAT) ------------------------------------
def _q_forward_loop(ux: torch.Tensor, W: torch.Tensor, bc: torch.Tensor | None, s: float, h_max: int):
    """Hidden codes C (T+1, B, n; C[0] = 0) and pre-activations Z (T, B, n) in units of s, plus 1/2.

    Per step, exactly docs/spec.md's step with the float ratios in place of M/2^S:
        Z_t = C_{t-1} W^T + ux_t / s + 1/2          (W real: its codes times s_W, so C W^T = r_W aW)
        z_t = floor(Z_t)                            round half up
        C_t = sign(z_t) clamp(|z_t| + bc, 0, h_max)  (ReLU: clamp(z_t, 0, h_max))
    One addmm and five in-place elementwise operations a step, as many as the float loop."""
    B, T, n = ux.shape
    C = _aligned_steps(ux, T + 1, B, n)
    C[0].zero_()
    Z = _aligned_steps(ux, T, B, n)
    U = ux.transpose(0, 1) / s + 0.5  # (T, B, n), one vectorised op for all steps
    Wt = W.t()
    cs, zs, us = C.unbind(0), Z.unbind(0), U.unbind(0)
    addmm, floor = torch.addmm, torch.floor
    if bc is None:
        for t in range(T):
            addmm(us[t], cs[t], Wt, out=zs[t])
            floor(zs[t], out=cs[t + 1]).clamp_(0, h_max)
    else:
        sg = ux.new_empty(B, n)
        sign = torch.sign
        for t in range(T):
            addmm(us[t], cs[t], Wt, out=zs[t])
            c = floor(zs[t], out=cs[t + 1])
            sign(c, out=sg)
            c.abs_().add_(bc).clamp_(0, h_max).mul_(sg)
    return C, Z


def _q_regions(Z: torch.Tensor, bc: torch.Tensor | None, h_max: int):
    """Integer pre-activation z, its sign, and the masks of the linear and the saturated region.

    The activation's derivative is taken at the integer it acts on (round is straight-through):
    modReLU c = sign(z) min(relu(|z| + bc), h_max) is linear where z != 0 and 0 < |z| + bc <= h_max,
    saturated where z != 0 and |z| + bc > h_max, zero elsewhere (autograd's conventions for relu
    at 0 and for clamp at its bound). ReLU: linear on 0 < z <= h_max, saturated above."""
    z = torch.floor(Z)
    if bc is None:
        return z, None, (z > 0) & (z <= h_max), z > h_max
    sg = torch.sign(z)
    t = z.abs().add_(bc)
    nz = sg != 0
    return z, sg, nz & (t > 0) & (t <= h_max), nz & (t > h_max)


class _QRecurrence(torch.autograd.Function):
    """h_t = s C_t with C_t the spec's integer step (above); straight-through gradients, LSQ for s.

    With a_t = h_{t-1} W^T + ux_t the real pre-activation and v_t = a_t / s:
      dh_t/da_t = 1 on the linear region, 0 elsewhere             (STE through round)
      dh_t/db   = sign(z_t) on the linear region                  (b enters as round(b/s), STE)
      dh_t/ds   = (z_t - v_t) + sign(z_t) (bc - b/s)   linear     (LSQ, Esser et al. 2020:
                = sign(z_t) h_max                      saturated   round(v) - v inside the range,
                = 0                                    zero        the bound where clipped)
    The backward loop is the float kernel's (one addmm and one multiply a step), keeping dL/dh_t
    before the mask (G) so that dL/ds = sum G * dh/ds is one vectorised product after the loop.
    """

    @staticmethod
    def forward(ctx, ux, W, b, s, h_max, track):
        sv = float(s)
        with torch.no_grad():
            bc = torch.round(b / sv) if b is not None else None
            C, Z = _q_forward_loop(ux, W, bc, sv, h_max)
            H = C[1:] * sv
            # max over the batch of the unclamped |h| = |a| + b (for a tracked, running-max scale)
            amax = ux.new_zeros(())
            if track:
                amax = ((Z - 0.5).abs_().mul_(sv).add_(b) if b is not None else (Z - 0.5).mul_(sv)).max()
        ctx.save_for_backward(C, Z, W, b, s)
        ctx.h_max = h_max
        ctx.mark_non_differentiable(amax)
        return H.transpose(0, 1), amax

    @staticmethod
    @once_differentiable
    def backward(ctx, dH, _damax):
        C, Z, W, b, s = ctx.saved_tensors
        sv, h_max = float(s), ctx.h_max
        T, B, n = Z.shape
        bc = torch.round(b / sv) if b is not None else None
        z, sg, lin, sat = _q_regions(Z, bc, h_max)
        mask = lin.to(Z.dtype)
        G = torch.empty_like(Z)
        dZ = torch.empty_like(Z)
        gs, ds, ms, hs = G.unbind(0), dZ.unbind(0), mask.unbind(0), dH.unbind(1)
        G[T - 1].copy_(hs[T - 1])
        torch.mul(gs[T - 1], ms[T - 1], out=ds[T - 1])
        addmm, mul = torch.addmm, torch.mul
        for t in range(T - 2, -1, -1):
            addmm(hs[t], ds[t + 1], W, out=gs[t])  # dL/dh_t = dH_t + dz_{t+1} W
            mul(gs[t], ms[t], out=ds[t])          # dL/da_t
        dux = dZ.transpose(0, 1) if ctx.needs_input_grad[0] else None
        dW = None
        if ctx.needs_input_grad[1]:
            dW = (dZ.reshape(T * B, n).t() @ C[:-1].reshape(T * B, n)).mul_(sv)  # sum_t dz_t^T h_{t-1}
        db = None
        if b is not None and ctx.needs_input_grad[2]:
            db = (dZ * sg).sum((0, 1))
        dsc = None
        if ctx.needs_input_grad[3]:
            D = z.sub_(Z).add_(0.5)                  # round(v) - v  (z = floor(v + 1/2))
            if b is not None:
                D.addcmul_(sg, bc - b / sv)          # + sign(z) (bc - b/s)
            D.mul_(mask)
            D.add_(sat.to(Z.dtype) * (sg if sg is not None else 1.0), alpha=h_max)
            dsc = (G * D).sum().reshape(s.shape).to(s.dtype)
        return dux, dW, db, dsc, None, None


def qrecurrence(ux: torch.Tensor, W: torch.Tensor, b: torch.Tensor | None, s: torch.Tensor, h_max: int,
                activation: str = "modrelu", track: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Hidden states H (B, T, n) of the quantized recurrence, H = s * (integer hidden codes), and,
    if `track`, max |a| + b over the batch (else 0; not differentiable; for a running-max scale).

    The step is docs/spec.md's with the float ratios r_W = s_W, r_U = s_U s_x / s in place of
    their 16-bit approximations M/2^S: pass W = its codes times s_W and ux = (input codes s_x)
    U_q^T, and the codes C = H / s are the integer loop's whenever those ratios are exact (power-
    of-two scales) and the float sums are (the spec's `pre` bound below 2^24 in float32, 2^53 in
    float64). s: 0-dim positive tensor (the hidden scale, learnable: LSQ gradient); h_max:
    2^(k_h - 1) - 1. Differentiable in ux, W, b, s."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; choose one of {', '.join(ACTIVATIONS)}")
    if ux.dim() != 3 or ux.shape[1] == 0:
        raise ValueError(f"ux must be (batch, time >= 1, hidden), got shape {tuple(ux.shape)}")
    n = ux.shape[2]
    if W.shape != (n, n):
        raise ValueError(f"W must be ({n}, {n}), got {tuple(W.shape)}")
    if (activation == "modrelu") != (b is not None) or (b is not None and b.shape != (n,)):
        raise ValueError(f"modrelu needs a bias of shape ({n},), relu none")
    if s.dim() != 0 or not float(s.detach()) > 0:
        raise ValueError("s must be a positive 0-dim tensor")
    if not isinstance(h_max, int) or h_max < 1:
        raise ValueError(f"h_max must be a positive integer, got {h_max!r}")
    for name, x in (("W", W), ("b", b), ("s", s)):
        if x is not None and (x.dtype != ux.dtype or x.device != ux.device):
            raise ValueError(f"{name} is {x.dtype} on {x.device}, ux is {ux.dtype} on {ux.device}")
    return _QRecurrence.apply(ux, W, b, s, h_max, bool(track))
