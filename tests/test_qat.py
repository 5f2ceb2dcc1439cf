"""Integer-aware training (issue 10): the QAT forward is the integer loop; LSQ, stochastic rounding,
Quant-Noise, spectral and power-of-two scales; export of the trained scales."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from qornn.errors import QornnError
from qornn.export.artifact import is_power_of_two
from qornn.export.exporter import export_model
from qornn.export.simulator import simulate
from qornn.train import QORNN
from qornn.train.lsq import LOG2_STEP, grad_scale, lsq_grad_factor, scale_from_log2
from qornn.train.quantizers import int_range, po2_ceil, quantize, spectral_scale
from qornn.train.tasks import make_task

F64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_torch_thread")   # tests/conftest.py


def trained(task, dtype=F64, steps=25, seed=0, hidden=14, **kw):
    """A QORNN trained a few steps (so the scales have moved from their starting points)."""
    torch.manual_seed(seed)
    model = QORNN(task.input_size, hidden, task.output_size, weight_bits=kw.pop("weight_bits", 4),
                  output_mode=kw.pop("output_mode", task.output_mode), **kw).to(dtype)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        x, y = task.batch(16, rng)
        logits = model(x.to(dtype))
        if logits.dim() == 2 and task.output_mode != "last_step":  # a last_step model on the copy task
            y = y[:, -1]
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.after_step()
    return model.eval()


# -- QAT forward == integer simulator ------------------------------------------------------------
@pytest.mark.parametrize("activation", ["modrelu", "relu"])
@pytest.mark.parametrize("act_scale", ["lsq", "max"])
@pytest.mark.parametrize("method, weight_scale, spectral, output_mode", [
    ("ste-bjorck", "po2", False, "every_step"),
    ("ste-projunn", "po2", True, "every_step"),
    ("ste-pen", "po2", False, "last_step"),
    ("ste-bjorck", "max", True, "every_step"),
    ("ste-projunn", "lsq", False, "last_step"),
])
def test_qat_forward_equals_integer_simulator(activation, act_scale, method, weight_scale, spectral, output_mode):
    """`==` on the hidden codes of every step and on the output codes (a float64 model, trained in
    float64 too). The forward uses the integer loop's own ratios M/2^S (train/act_quant.py), so every
    product and sum is an exact dyadic number below 2^53 (the artifact's `pre` bound; the
    simulator's float64 path needs the same), whatever the scale mode; with po2 scales M = 1."""
    task = make_task("copy", length=24)
    model = trained(task, method=method, act_bits=8, act_scale=act_scale, weight_scale=weight_scale,
                    spectral_scale=spectral, activation=activation, output_mode=output_mode)
    art, _ = export_model(model, task)
    assert art.float64_exact()
    if weight_scale == "po2":
        assert art.scale_mode == "po2" and art.m_w == 1 and art.m_u == 1
    else:
        assert art.m_w > 1 and art.m_u > 1  # real multipliers, not plain shifts
    x = torch.from_numpy(np.random.default_rng(7).random((48, 60, task.input_size)) * 1.3 - 0.1)
    x[:, ::3] = task.batch(48, np.random.default_rng(8))[0][:, :20].double()  # real one-hot symbols too
    with torch.no_grad():
        logits, H = model(x, return_hidden=True)
    sim = simulate(art, x.numpy())
    codes = torch.round(H / art.hidden_scale)
    if weight_scale == "po2":
        assert torch.equal(H, codes * art.hidden_scale)  # H holds the codes exactly
    else:  # H = codes s_h rounded to float64
        assert (H / art.hidden_scale - codes).abs().max() < 1e-9
    assert np.array_equal(codes.numpy().astype(np.int64), sim.hidden)
    y = logits / art.output_scale
    if weight_scale == "po2":
        assert np.array_equal(y.numpy(), sim.output.astype(np.float64))
    else:  # s_h s_V has more than 53 bits: the real logits are the codes up to float64 rounding
        assert np.array_equal(torch.round(y).numpy().astype(np.int64), sim.output)
        assert (y - torch.round(y)).abs().max() < 1e-6
    # not a vacuous comparison: states are neither all zero nor all saturated
    assert (sim.hidden != 0).mean() > 0.2 and (np.abs(sim.hidden) < art.h_max).mean() > 0.2
    if spectral:
        w = torch.from_numpy(art.W.astype(np.float64)) * art.w_scale
        assert torch.linalg.matrix_norm(w, ord=2) <= 1.0


@pytest.mark.parametrize("weight_scale", ["max", "lsq", "po2"])
def test_float32_model_eval_forward_is_exact(weight_scale):
    """A float32 model's eval-mode forward runs the loop in float64: the simulator's codes and
    predictions exactly, whatever the scale mode (on 512 copy sequences of 60 steps)."""
    task = make_task("copy", length=60)
    model = trained(task, dtype=torch.float32, act_bits=8, weight_scale=weight_scale, steps=40)
    art, _ = export_model(model, task)
    x = task.batch(512, np.random.default_rng(3))[0]
    with torch.no_grad():
        logits, H = model(x, return_hidden=True)
    assert logits.dtype == H.dtype == torch.float32
    sim = simulate(art, x.numpy().astype(np.float64))
    assert np.array_equal(torch.round(H.double() / art.hidden_scale).numpy().astype(np.int64), sim.hidden)
    assert np.array_equal(logits.argmax(-1).numpy(), sim.output_real.argmax(-1))
    assert ((logits.double() / art.output_scale - torch.from_numpy(sim.output.astype(np.float64))).abs()
            <= 1e-6 * (1 + np.abs(sim.output).max())).all()


def training_forward_codes(model, x):
    """The float32 training-mode forward's hidden states (LSQ scales: nothing changes but max|x|)."""
    model.train()
    with torch.no_grad():
        _, H = model(x, return_hidden=True)
    model.eval()
    return H


def test_po2_training_forward_float32_exact_where_the_bound_proves_it():
    """float32 is exact when every partial sum is a multiple of 2^-max(S,1) hidden units below
    2^24 in magnitude: the spec's `pre` bound (units 2^-S) times 2^(max(S,1)-S) < 2^24."""
    task = make_task("copy", length=24)
    model = trained(task, dtype=torch.float32, act_bits=8, weight_scale="po2")
    art, _ = export_model(model, task)
    S = art.shift
    assert art.bounds()["pre"] * 2 ** (max(S, 1) - S) < 2**24
    x = task.batch(64, np.random.default_rng(3))[0]
    H = training_forward_codes(model, x)
    sim = simulate(art, x.numpy().astype(np.float64))
    assert np.array_equal((H.double() / art.hidden_scale).numpy().astype(np.int64), sim.hidden)


@pytest.mark.parametrize("weight_scale", ["max", "lsq"])
def test_float32_training_forward_and_the_bound_on_its_difference(weight_scale):
    """The float32 training forward with 16-bit multipliers: given the same previous codes, its
    pre-activation (hidden units) differs from the integer loop's only by float32 rounding of the
    sums, at most delta = gamma_k (r_W |W||h| + r_U |U||x| + 1), gamma_k = k 2^-24 / (1 - k 2^-24),
    k = n + m + 4 (the dot-product error bound); so a code can differ only where the exact
    pre-activation lies within delta of a rounding boundary j + 1/2. Checked on every first
    divergence in 1024 sequences (harmless for the gradient; evaluation runs in float64)."""
    task = make_task("copy", length=30)
    model = trained(task, dtype=torch.float32, act_bits=8, weight_scale=weight_scale, steps=40)
    art, _ = export_model(model, task)
    x, _ = task.batch(1024, np.random.default_rng(11))
    H = training_forward_codes(model, x)
    sim = simulate(art, x.numpy().astype(np.float64))
    codes = torch.round(H.double() / art.hidden_scale).numpy().astype(np.int64)
    assert (codes == sim.hidden).all((1, 2)).mean() >= 0.9
    r_w, r_u = (math.ldexp(art.m_w, -art.shift_w), math.ldexp(art.m_u, -art.shift_u))
    xc = np.clip(np.floor(x.numpy().astype(np.float64) / art.input_scale + 0.5), -art.x_max, art.x_max)
    k = art.hidden_size + art.input_size + 4
    gamma = k * 2.0**-24 / (1 - k * 2.0**-24)
    for seq in np.flatnonzero((codes != sim.hidden).any((1, 2))):
        t = np.flatnonzero((codes[seq] != sim.hidden[seq]).any(1))[0]
        prev = sim.hidden[seq, t - 1] if t else np.zeros(art.hidden_size)
        v = r_w * (art.W @ prev) + r_u * (art.U @ xc[seq, t])
        delta = gamma * (r_w * np.abs(art.W) @ np.abs(prev) + r_u * np.abs(art.U) @ np.abs(xc[seq, t]) + 1)
        diff = codes[seq, t] != sim.hidden[seq, t]
        assert (np.abs(v - np.floor(v) - 0.5)[diff] <= delta[diff]).all()


def test_requant_ratio_is_the_exporters_rule():
    from qornn.export.artifact import requant_constant
    from qornn.train.act_quant import requant_ratio

    rng = np.random.default_rng(0)
    for r in np.concatenate([np.exp(rng.uniform(-30, 10, 3000)), [0.5, 1.0, 2.0**-20, 1 - 2**-30, 3.0]]):
        r = float(r)
        M, S = requant_constant(r)
        assert requant_ratio(r) == math.ldexp(M, -S)
        assert requant_constant(requant_ratio(r)) == (M, S)  # a ratio on the grid exports as itself
        d = requant_ratio(r, down=True)
        assert d <= r and requant_constant(d)[0] < 2**16


# -- LSQ ----------------------------------------------------------------------------------------
def lsq_paper(v, s, bits, narrow=False):
    """The LSQ paper's reference quantizer (Esser et al. 2020, appendix), weights: gradscale,
    roundpass, clip; written with the paper's operations and differentiated by autograd."""
    lo, hi = int_range(bits, narrow)
    s = grad_scale(s, 1.0)
    v = torch.clamp(v / s, lo, hi)
    vbar = (v.round() - v).detach() + v
    return vbar * s


@pytest.mark.parametrize("bits, narrow", [(2, True), (3, False), (4, False), (8, True)])
def test_lsq_gradient_is_the_papers(bits, narrow):
    g = torch.Generator().manual_seed(bits)
    w = (torch.randn(40, 30, generator=g, dtype=F64) * 0.3).requires_grad_()
    s = torch.tensor(0.6 / 2 ** (bits - 1), dtype=F64, requires_grad=True)  # some weights clip
    go = torch.randn(40, 30, generator=g, dtype=F64)
    wq, codes, scale = quantize(w, bits, narrow, mode="lsq", scale=s)
    ref = lsq_paper(w, s, bits, narrow)
    assert torch.equal(wq, ref) and torch.equal(wq, codes * scale)
    gw, gs = torch.autograd.grad(wq, [w, s], go)
    rw, rs = torch.autograd.grad(ref, [w, s], go)
    assert torch.allclose(gw, rw, rtol=1e-15, atol=0)  # the reference's passes through (1/s) * s
    assert torch.isclose(gs, rs, rtol=1e-12)
    # the closed form: d w_q / d s = round(v) - v inside [lo, hi], the clipped code outside
    lo, hi = int_range(bits, narrow)
    v = w.detach() / s.detach()
    inside = (v >= lo) & (v <= hi)
    assert (~inside).any() and inside.any()
    formula = torch.where(inside, torch.round(v) - v, torch.clamp(torch.round(v), lo, hi))
    assert torch.isclose(gs, (go * formula).sum(), rtol=1e-12)
    assert torch.equal(gw, go * inside)


def test_lsq_log2_parameter_chain_rule():
    theta = torch.tensor(-0.37, dtype=F64, requires_grad=True)
    g = lsq_grad_factor(64, 127)
    s = scale_from_log2(theta, g)
    assert torch.isclose(s, torch.tensor(2.0 ** (-0.37 * LOG2_STEP), dtype=F64))
    (s * 3.0).backward()
    assert torch.isclose(theta.grad, 3.0 * math.log(2) * s.detach() * g * LOG2_STEP)
    p = scale_from_log2(torch.tensor(-0.37, dtype=F64), g, po2=True)
    assert is_power_of_two(float(p)) and float(p) == 2.0 ** round(-0.37 * LOG2_STEP)


# -- stochastic rounding and Quant-Noise ----------------------------------------------------------
def test_stochastic_rounding_is_unbiased():
    """Over N draws the mean of the stochastic codes equals v = w/s for every weight within 5
    standard errors: the variance of one draw is f(1-f) <= 1/4 (f = frac(v)), so |mean - v| <=
    5 * 0.5 / sqrt(N) code units. Every draw is floor(v) or ceil(v). Nearest rounding, the control,
    misses that tolerance (its error is up to 1/2 a code, systematically)."""
    g = torch.Generator().manual_seed(0)
    w = torch.rand(200, generator=g, dtype=F64) * 1.8 - 0.9
    w[0] = 1.0  # the max-abs scale: s = 1/8 at 4 bits (w stays inside [-8, 7] s... but for w[0])
    bits, n = 4, 4000
    torch.manual_seed(1)
    draws = torch.stack([quantize(w, bits, stochastic=True)[1] for _ in range(n)])
    s = float(quantize(w, bits)[2])
    v = w / s
    inside = (v > -8) & (v < 7)
    assert inside.sum() >= 190
    assert ((draws == torch.floor(v)) | (draws == torch.ceil(v)))[:, inside].all()
    tol = 5 * 0.5 / math.sqrt(n)
    err = (draws.mean(0) - v)[inside].abs()
    assert err.max() <= tol
    nearest = (torch.round(v) - v)[inside].abs()
    assert nearest.max() > tol  # the test can tell a biased rounding apart


def test_quant_noise_quantizes_the_stated_fraction():
    """Each entry is quantized with probability p (fresh each call), else left exact: over 50 calls
    of 2,000 entries the fraction is within 5 binomial standard deviations of p; the gradient is
    the identity everywhere (STE on the quantized ones)."""
    g = torch.Generator().manual_seed(2)
    w = (torch.randn(2000, generator=g, dtype=F64) * 0.2).requires_grad_()
    q = quantize(w, 4)[0].detach()
    assert (q != w.detach()).all()
    p, calls = 0.3, 50
    torch.manual_seed(3)
    hits = 0
    for _ in range(calls):
        out = quantize(w, 4, noise_rate=p)[0]
        quantized = out.detach() == q
        assert torch.equal(out.detach()[~quantized], w.detach()[~quantized])
        hits += int(quantized.sum())
    n = calls * w.numel()
    assert abs(hits / n - p) <= 5 * math.sqrt(p * (1 - p) / n)
    (gw,) = torch.autograd.grad(quantize(w, 4, noise_rate=p)[0].sum(), [w])
    assert torch.equal(gw, torch.ones_like(gw))


def test_stochastic_and_noise_only_in_training():
    task = make_task("copy", length=22)
    torch.manual_seed(0)
    model = QORNN(task.input_size, 8, task.output_size, weight_bits=3, rounding="stochastic", quant_noise=0.5)
    model.eval()
    a, b = model.effective_weights(), model.effective_weights()
    assert all(torch.equal(a[k], b[k]) for k in a)
    model.train()
    a, b = model.effective_weights(), model.effective_weights()
    assert not torch.equal(a["U"], b["U"])


# -- spectral and power-of-two scales -------------------------------------------------------------
@pytest.mark.parametrize("po2", [False, True])
def test_spectral_scale_keeps_codes_and_makes_q_w_non_expansive(po2):
    g = torch.Generator().manual_seed(4)
    w = torch.linalg.qr(torch.randn(32, 32, generator=g))[0]
    wq, codes, s = quantize(w, 4, mode="po2" if po2 else "max")
    assert torch.linalg.matrix_norm(wq.double(), ord=2) > 1.0  # the 4-bit q(W) of an orthogonal W expands
    wq2, codes2, s2 = quantize(w, 4, mode="po2" if po2 else "max", spectral=True)
    assert torch.equal(codes, codes2) and float(s2) < float(s)
    assert torch.linalg.matrix_norm(codes2.double() * float(s2), ord=2) <= 1.0
    assert torch.equal(wq2, codes2 * s2)
    if po2:
        assert is_power_of_two(float(s2))
    else:  # the largest float32 scale that does it
        up = torch.nextafter(s2, torch.tensor(1.0))
        assert torch.linalg.matrix_norm(codes2.double() * float(up), ord=2) > 1.0
    small = spectral_scale(codes, s * 0.5)
    assert float(small) == float(s) * 0.5  # already non-expansive: unchanged


def test_po2_ceil_exact():
    s = torch.tensor([0.25, 0.26, 0.1249, 3.0, 1.0], dtype=F64)
    assert po2_ceil(s).tolist() == [0.25, 0.5, 0.125, 4.0, 1.0]


def test_po2_export_of_a_calibrated_model_and_lsq_export_refused():
    task = make_task("copy", length=22)
    model = trained(task, steps=5)
    art, _ = export_model(model, task, weight_scale="po2", act_bits=8)
    assert art.scale_mode == "po2" and art.m_w == art.m_u == 1
    assert all(is_power_of_two(v) for v in (art.input_scale, art.w_scale, art.u_scale, art.hidden_scale, art.v_scale))
    with pytest.raises(QornnError, match="learned in training"):
        export_model(model, task, weight_scale="lsq")


def test_export_of_a_qat_model_uses_its_trained_scales():
    task = make_task("copy", length=22)
    model = trained(task, act_bits=6, input_bits=7, weight_scale="lsq", steps=10)
    art, _ = export_model(model, task)
    sc = model.scales()
    assert (art.act_bits, art.input_bits) == (6, 7)
    assert (art.hidden_scale, art.input_scale) == (sc["hidden"], sc["input"])
    assert art.scale_mode == "lsq" and art.provenance["calibration"] is None
    for name, scale in (("W", art.w_scale), ("U", art.u_scale), ("V", art.v_scale)):
        assert scale == float(model.quantized_weights()[name][2])
    with pytest.raises(QornnError, match="differs from the hidden-state QAT training"):
        export_model(model, task, act_bits=8)
    art2, _ = export_model(model, task, act_bits=8, calibrate_hidden=True)
    assert art2.provenance["scales"]["hidden"] == "calibrated" and art2.act_bits == 8


def test_tracked_hidden_scale_follows_the_running_maximum():
    task = make_task("copy", length=22)
    torch.manual_seed(0)
    model = QORNN(task.input_size, 10, task.output_size, weight_bits=4, act_bits=8, act_scale="max").double()
    x, _ = task.batch(8, np.random.default_rng(0))
    model(x.double())  # initialises (and observes) on this batch
    s0 = model.scales()["hidden"]
    model.train()
    model.act.momentum = 1.0  # the next observation replaces the scale
    from qornn.train.recurrence import qrecurrence

    w = model.effective_weights()
    xc, s_x = model.act.quantize_input(x.double())
    s_h = model.act.hidden_scale()
    _, amax = qrecurrence((xc * s_x) @ w["U"].t() / s_h, w["W"], model.b, s_h, model.act.h_max, "modrelu",
                          track=True)
    model(x.double())
    # (the model's input term uses M_U / 2^S_U, within 2^-16 of the float ratio used here)
    assert model.scales()["hidden"] == pytest.approx(float(amax) / 127, rel=1e-4)
    assert model.scales()["hidden"] != s0
    assert not any(p.requires_grad for n, p in model.named_parameters() if "scale" in n)


@pytest.mark.parametrize("kw, msg", [
    (dict(act_bits=8, method="fp"), "needs a QAT method"),
    (dict(act_bits=1), "activation bits"),
    (dict(act_bits=2), "act bits >= 3"),
    (dict(act_bits=8, input_bits=20), "input bits"),
    (dict(act_scale="ema"), "unknown act scale"),
    (dict(weight_scale="log"), "unknown weight scale"),
    (dict(weight_scale="lsq", method="ptq-projunn"), "need a QAT method"),
    (dict(rounding="up"), "rounding"),
    (dict(rounding="stochastic", weight_bits=1), "2 bits or more"),
    (dict(quant_noise=1.0), "quant noise"),
    (dict(spectral_scale=1), "spectral_scale"),
])
def test_bad_options(kw, msg):
    kw = {"weight_bits": 4} | kw
    with pytest.raises(QornnError, match=msg):
        QORNN(3, 4, 2, **kw)


@pytest.mark.parametrize("activation", ["modrelu", "relu"])
@pytest.mark.parametrize("weight_scale", ["lsq", "po2"])
def test_model_gradients_equal_a_plain_autograd_formulation(activation, weight_scale):
    """Every parameter's gradient of the QAT model (fast kernel, `_InputTerm`) against the same
    forward pass written with plain autograd: the input term as exact value + (float - float.detach()),
    the loop with the LSQ paper's roundpass and hardtanh."""
    from qornn.train.act_quant import requant_ratio

    task = make_task("copy", length=22)
    model = trained(task, act_bits=6, weight_scale=weight_scale, activation=activation, steps=5).train()
    x, y = task.batch(8, np.random.default_rng(4))
    x = x.double()
    torch.manual_seed(9)
    loss = torch.nn.functional.cross_entropy(model(x).reshape(-1, task.output_size), y.reshape(-1))
    got = torch.autograd.grad(loss, list(model.parameters()), allow_unused=True)

    torch.manual_seed(9)
    qw = model.quantized_weights()
    w = {k: v[0] for k, v in qw.items()}
    xc, s_x = model.act.quantize_input(x)
    s_h = model.act.hidden_scale()
    r_u = requant_ratio(float(qw["U"][2]) * float(s_x) / float(s_h.detach()))
    u_f = (xc * s_x) @ w["U"].t() / s_h
    u = (xc @ (qw["U"][1] * r_u).t()) + (u_f - u_f.detach())
    c = torch.zeros_like(u[:, 0])
    hs = []
    h_max = model.act.h_max
    for t in range(u.shape[1]):
        v = c @ w["W"].t() + u[:, t]
        z = (torch.floor(v + 0.5) - v).detach() + v
        if activation == "modrelu":
            bq = model.b / s_h
            bc = (torch.round(bq) - bq).detach() + bq
            c = torch.sign(z) * torch.nn.functional.hardtanh(z.abs() + bc, 0, h_max)
        else:
            c = torch.nn.functional.hardtanh(z, 0, h_max)
        hs.append(c * s_h)
    from qornn.train.quantizers import on_grid

    logits = torch.stack(hs, 1) @ w["V"].t() + on_grid(model.c, (qw["V"][2] * s_h).detach())
    ref = torch.nn.functional.cross_entropy(logits.reshape(-1, task.output_size), y.reshape(-1))
    assert torch.isclose(loss, ref, rtol=1e-12)
    want = torch.autograd.grad(ref, list(model.parameters()), allow_unused=True)
    for (name, _), a, b in zip(model.named_parameters(), got, want):
        assert (a is None) == (b is None), name
        if a is not None:
            assert torch.allclose(a, b, rtol=1e-8, atol=1e-12 * (1 + b.abs().max())), name
    assert got[[n for n, _ in model.named_parameters()].index("act.log2_scale")].abs() > 0
