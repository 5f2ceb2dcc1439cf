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
def _q_forward_loop(u: torch.Tensor, W: torch.Tensor, bc: torch.Tensor | None, h_max: int, track: bool):
    """Hidden codes C (T+1, B, n; C[0] = 0), the signs SG = sign(z) (T, B, n; modReLU only) and, if
    `track`, max_t,b,n |v + 1/2| (v below).

    Per step, docs/spec.md's step, computed in place into C[t] as the float loop does:
        v_t = C_{t-1} W^T + u_t                     (W: codes times r_W; u: U x in units of s_h)
        z_t = floor(v_t + 1/2)                      round half up (the 1/2 is added to u once)
        C_t = sign(z_t) clamp(|z_t| + bc, 0, h_max)  (ReLU: clamp(z_t, 0, h_max))
    One addmm and five in-place elementwise operations a step, as many as the float loop; the
    signs land in SG (where they are computed anyway) for the backward's bias gradient."""
    B, T, n = u.shape
    C = _aligned_steps(u, T + 1, B, n)
    C[0].zero_()
    U = u.transpose(0, 1) + 0.5  # (T, B, n) contiguous, one vectorised op for all steps
    SG = _aligned_steps(u, T, B, n) if bc is not None else None
    Wt = W.t()
    cs, us = C.unbind(0), U.unbind(0)
    addmm, sign = torch.addmm, torch.sign
    vmax = u.new_zeros(()) if track else None
    for t in range(T):
        c = addmm(us[t], cs[t], Wt, out=cs[t + 1])
        if track:
            torch.maximum(vmax, c.abs().max(), out=vmax)
        c.floor_()
        if bc is None:
            c.clamp_(0, h_max)
        else:
            sg = sign(c, out=SG[t])
            c.abs_().add_(bc).clamp_(0, h_max).mul_(sg)
    return C, SG, vmax


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """sum(a * b) without a temporary, by BLAS when both are contiguous the same way."""
    if a.is_contiguous() and b.is_contiguous():
        return torch.dot(a.reshape(-1), b.reshape(-1))
    return (a * b).sum()


class _QRecurrence(torch.autograd.Function):
    """H = s C with C the integer hidden codes of the spec's step; straight-through gradients.

    In hidden units (v_t = C_{t-1} W^T + u_t, C_t = act(round(v_t), round(b/s)), H_t = s C_t):
    round is straight-through, and the clamp to [0, h_max] has the derivative of the LSQ paper's
    hardtanh, 1 strictly inside and 0 at and beyond its bounds; so the activation is linear exactly
    where 0 < |C_t| < h_max, a mask read from the codes alone (m_t; sign(z_t) = sign(C_t) there):
      dL/dC_t = s dL/dH_t + dL/dv_{t+1} W          dL/dv_t = m_t dL/dC_t        dL/du = dL/dv
      dL/dW = sum_t dv_t^T C_{t-1}                 dL/db = sum sign(C) dL/dv / s
      dL/ds = <dL/dH, C> - <dL/db, b> / s          (h = s C directly, and b enters as round(b/s))
    With u = U x / s computed by the caller (autograd), this is LSQ's gradient for s (Esser et al.
    2020): round(v) - v + sign(z) (round(b/s) - b/s) on the linear region, sign(z) h_max where
    saturated, 0 where the state is 0 (tests/test_qat_recurrence.py checks it against the paper's
    roundpass/hardtanh formulation). The backward loop is the float kernel's, one addmm (whose
    beta = s applies the scale for free) and one multiply a step, plus the mask computed per step
    from the step's codes while they are in cache: on a shared, memory-bound machine four vectorised
    passes over (T, B, n) cost more than these 4T small operations (measured 1.43x -> 1.09x the
    float kernel's time, hidden 128, batch 64, length 256). The rest is vectorised.
    """

    @staticmethod
    def forward(ctx, u, W, b, s, h_max, track):
        sv = float(s)
        B, T, n = u.shape
        with torch.no_grad():
            bc = torch.round(b / sv) if b is not None else None
            C, SG, vmax = _q_forward_loop(u, W, bc, h_max, track)
            H = torch.mul(C[1:].transpose(0, 1), sv, out=u.new_empty(B, T, n))  # batch-major, like dL/dH
            amax = u.new_zeros(())
            if track:  # max |a| + b, a = s v (the unclamped |h|), for a running-max hidden scale
                amax = (vmax + 0.5) * sv + (b.max() if b is not None else 0)
        ctx.save_for_backward(C, SG, H, W, b, s)
        ctx.h_max = h_max
        ctx.mark_non_differentiable(amax)
        return H, amax

    @staticmethod
    @once_differentiable
    def backward(ctx, dH, _damax):
        C, SG, H, W, b, s = ctx.saved_tensors
        sv = float(s)
        T, B, n = C.shape[0] - 1, C.shape[1], C.shape[2]
        # per step, on cache-resident slices: m_t = 1[0 < |C_t| < h_max] = clamp(|C| (h_max - |C|), 0, 1),
        # and the bias gradient's sum of sign(z) dL/dv accumulated in place
        dV = _aligned_steps(C, T, B, n)
        vs, cs, hs = dV.unbind(0), C.unbind(0), dH.unbind(1)
        a, m = C.new_empty(B, n), C.new_empty(B, n)
        want_db = b is not None and (ctx.needs_input_grad[2] or ctx.needs_input_grad[3])
        acc = C.new_zeros(B, n) if want_db else None
        sgs = SG.unbind(0) if want_db else None
        h_max = ctx.h_max
        absf, sub, addmm = torch.abs, torch.sub, torch.addmm

        def mask(t):
            absf(cs[t + 1], out=a)
            return sub(h_max, a, out=m).mul_(a).clamp_(0, 1)

        torch.mul(hs[T - 1], mask(T - 1), out=vs[T - 1]).mul_(sv)
        if want_db:
            acc.addcmul_(vs[T - 1], sgs[T - 1])
        for t in range(T - 2, -1, -1):
            d = vs[t]
            addmm(hs[t], vs[t + 1], W, beta=sv, out=d)  # dL/dC_t = s dH_t + dv_{t+1} W
            d.mul_(mask(t))                            # dL/dv_t
            if want_db:
                acc.addcmul_(d, sgs[t])                # sign(z) = sign(C) where m = 1
        du = dV.transpose(0, 1) if ctx.needs_input_grad[0] else None
        dW = dV.reshape(T * B, n).t() @ C[:-1].reshape(T * B, n) if ctx.needs_input_grad[1] else None
        db = dsc = None
        if want_db:
            db = acc.sum(0).div_(sv)  # sign(z) = sign(C) where m = 1
        if ctx.needs_input_grad[3]:
            g = _dot(dH, H) / sv  # <dL/dH, C>
            if b is not None:
                g = g - (db * b).sum() / sv
            dsc = g.reshape(s.shape).to(s.dtype)
        return du, dW, db if ctx.needs_input_grad[2] else None, dsc, None, None


def qrecurrence(u: torch.Tensor, W: torch.Tensor, b: torch.Tensor | None, s: torch.Tensor, h_max: int,
                activation: str = "modrelu", track: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Hidden states H (B, T, n) of the quantized recurrence, H = s * (integer hidden codes), and,
    if `track`, max |a| + max b over the batch (else 0; not differentiable; for a running-max
    scale; a = s v, the real pre-activation).

    u: (B, T, n) the input term in hidden units (U x / s); W: (n, n) the recurrent term's matrix in
    hidden units, i.e. its codes times r_W = s_W; b: (n,) the modReLU bias in real units (used as
    round(b / s)); s: 0-dim positive tensor, the hidden scale (learnable); h_max: 2^(k_h - 1) - 1.
    The codes H / s are docs/spec.md's integers whenever W and u hold the integer loop's ratios
    (M/2^S) and the float sums are exact (float64: the spec's `pre` bound below 2^53; float32 needs
    power-of-two scales and `pre` below 2^23). Differentiable in u, W, b, s."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; choose one of {', '.join(ACTIVATIONS)}")
    if u.dim() != 3 or u.shape[1] == 0:
        raise ValueError(f"u must be (batch, time >= 1, hidden), got shape {tuple(u.shape)}")
    n = u.shape[2]
    if W.shape != (n, n):
        raise ValueError(f"W must be ({n}, {n}), got {tuple(W.shape)}")
    if (activation == "modrelu") != (b is not None) or (b is not None and b.shape != (n,)):
        raise ValueError(f"modrelu needs a bias of shape ({n},), relu none")
    if s.dim() != 0 or not float(s.detach()) > 0:
        raise ValueError("s must be a positive 0-dim tensor")
    if not isinstance(h_max, int) or h_max < 1:
        raise ValueError(f"h_max must be a positive integer, got {h_max!r}")
    for name, x in (("W", W), ("b", b), ("s", s)):
        if x is not None and (x.dtype != u.dtype or x.device != u.device):
            raise ValueError(f"{name} is {x.dtype} on {x.device}, u is {u.dtype} on {u.device}")
    return _QRecurrence.apply(u, W, b, s, h_max, bool(track))
