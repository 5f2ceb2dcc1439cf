"""The QORNN model: h_t = act(W h_{t-1} + U x_t), y_t = V h_t + c, with W and U quantized.

A plain ``torch.nn.Module``: drop it into any training loop. The recurrent matrix comes from
the training method's parametrization (``recurrent_float``); the forward pass always uses its
k-bit fake-quantized version (straight-through estimator) unless ``quantized=False``.

With ``act_bits`` (hidden-state QAT) the quantized forward pass is the integer loop of
docs/spec.md computed in floating point: inputs rounded to ``input_bits``-bit codes, every
hidden state to ``act_bits``-bit codes with the spec's rounding (half up) and saturation, the
modReLU bias in hidden codes, V and c on the output grid. Its scales are trained (learned or
tracked, train/act_quant.py) and exported as they are; the exported integers then differ from
this forward only through M/2^S against the float ratios, and not at all with power-of-two
scales (``weight_scale='po2'``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from qornn.errors import QornnError

from .act_quant import ACT_SCALES, ActQuant, input_term, on_requant_grid, requant_ratio
from .bjorck import bjorck, spectral_norm_estimate
from .inits import GRID_INITS, RECURRENT_INITS, grid_support, init_recurrent
from .lsq import log2_param, lsq_grad_factor, scale_from_log2
from .quantizers import WEIGHT_SCALES, check_bits, int_range, on_grid, quantize, value_of
from .recurrence import qrecurrence, recurrence

ACTIVATIONS = ("modrelu", "relu")
OUTPUT_MODES = ("every_step", "last_step")
LAYER_INITS = ("kaiming-uniform", "kaiming-normal", "zeros")  # of U and V (kaiming-uniform: nn.Linear's)
MAX_ITERS = 1000  # Björck / power iterations: the paper uses ~15 and 3
METHODS = ("ste-bjorck", "ste-projunn", "ste-pen", "ptq-projunn", "fp")
"""Training methods of the QORNN paper (arXiv 2402.04012), plus the full-precision baseline:
  ste-bjorck   W_q = q(Björck(W / sigma_max(W))), STE through q, autograd through Björck
  ste-projunn  W kept orthogonal by projUNN rank-k updates; forward uses q(W) (STE)
  ste-pen      free W, forward uses q(W) (STE), loss += penalty * ||q(W)^T q(W) - I||_F^2
  ptq-projunn  full-precision projUNN training; quantized only after training
  fp           full-precision orthogonal RNN (Björck parametrization), quantized only after training
"""


def modrelu(z: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """sign(z) * relu(|z| + b): piecewise linear, so its integer form needs no lookup table."""
    return torch.sign(z) * torch.relu(z.abs() + b)


class QORNN(nn.Module):
    """A quantized approximately orthogonal RNN: ``h_t = σ(W h_{t-1} + U x_t)``, ``y_t = V h_t + c``.

    `method` picks how W is kept close to orthogonal (``ste-bjorck``, ``ste-projunn``, ``ste-pen``,
    ``ptq-projunn``, or the full-precision baseline ``fp``); `weight_bits` quantizes W and U
    (refined per tensor by `recurrent_bits` and `input_weight_bits`; `narrow_range` for symmetric
    codes), `output_bits` also V. `activation` is ``modrelu`` (learned bias b) or ``relu``;
    `output_mode` is ``every_step`` or ``last_step``. `bjorck_iters`, `power_iters`,
    `projunn_rank`, `projunn_mode` and `penalty` configure the methods. An invalid setting raises
    a one-line QornnError."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        output_size: int,
        weight_bits: int | None = 4,
        activation: str = "modrelu",
        method: str = "ste-bjorck",
        output_mode: str = "every_step",
        output_bits: int | None = None,
        bjorck_iters: int = 15,
        power_iters: int = 3,
        projunn_rank: int = 1,
        projunn_mode: str = "D",
        penalty: float = 0.1,
        recurrent_bits: int | None = None,
        input_weight_bits: int | None = None,
        narrow_range: bool = False,
        act_bits: int | None = None,
        input_bits: int = 8,
        act_scale: str = "lsq",
        weight_scale: str = "max",
        spectral_scale: bool = False,
        rounding: str = "nearest",
        quant_noise: float = 0.0,
        recurrent_init: str = "orthogonal",
        input_init: str = "kaiming-uniform",
        output_init: str = "kaiming-uniform",
        null_input: int | None = None,
    ):
        super().__init__()
        for name, value in (("input size", input_size), ("hidden size", hidden_size), ("output size", output_size)):
            if not isinstance(value, int) or value <= 0:
                raise QornnError(f"{name} must be a positive integer, got {value!r}")
        for what, bits in (("weight bits", weight_bits), ("recurrent bits", recurrent_bits),
                           ("input weight bits", input_weight_bits), ("output bits", output_bits)):
            if bits is not None:
                check_bits(bits, what)
        if (recurrent_bits is not None or input_weight_bits is not None) and weight_bits is None:
            raise QornnError("recurrent / input weight bits refine --weight-bits; give weight bits too")
        if not isinstance(narrow_range, bool):
            raise QornnError(f"narrow_range must be true or false, got {narrow_range!r}")
        for what, v, lo, hi in (("bjorck_iters", bjorck_iters, 0, 100), ("power_iters", power_iters, 1, 100)):
            if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
                raise QornnError(f"{what} must be an integer in {lo}..{hi}, got {v!r}")
        if activation not in ACTIVATIONS:
            raise QornnError(f"unknown activation {activation!r}; choose one of {', '.join(ACTIVATIONS)}")
        if output_mode not in OUTPUT_MODES:
            raise QornnError(f"unknown output mode {output_mode!r}; choose one of {', '.join(OUTPUT_MODES)}")
        if method not in METHODS:
            raise QornnError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
        if method in ("ste-projunn", "ptq-projunn"):
            if not isinstance(projunn_rank, int) or not 1 <= projunn_rank <= hidden_size:
                raise QornnError(f"projUNN rank must be in 1..hidden size ({hidden_size}), got {projunn_rank!r}")
            if projunn_mode not in ("D", "T"):
                raise QornnError(f"projUNN mode must be D or T, got {projunn_mode!r}")
        if not isinstance(penalty, (int, float)) or isinstance(penalty, bool):
            raise QornnError(f"penalty must be a number, got {penalty!r}")
        if method == "ste-pen" and not (penalty >= 0 and math.isfinite(penalty)):
            raise QornnError(f"penalty must be a finite number >= 0, got {penalty!r}")
        for name, value, lo in (("bjorck_iters", bjorck_iters, 0), ("power_iters", power_iters, 1)):
            if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= MAX_ITERS:
                raise QornnError(f"{name} must be an integer in {lo}..{MAX_ITERS}, got {value!r}")
        if weight_bits is None and method.startswith("ste-"):
            raise QornnError(f"method {method} trains quantized weights; give weight bits")
        # integer-aware training (hidden-state QAT, scales, rounding)
        if act_bits is not None:
            check_bits(act_bits, "activation bits", 2, 16)
            if act_bits < 3:
                raise QornnError("hidden-state QAT needs act bits >= 3: a 2-bit hidden state (codes -1, 0, 1) is "
                                 "always 0 or at the clip, where the straight-through gradient is 0 "
                                 "(2-bit hidden states can be exported post hoc)")
            check_bits(input_bits, "input bits", 2, 16)
            if not method.startswith("ste-"):
                raise QornnError(f"hidden-state QAT (act bits) needs a QAT method (ste-*), not {method}: "
                                 "PTQ methods train in full precision and calibrate at export")
            output_bits = 8 if output_bits is None else output_bits  # the integer core quantizes V
        if act_scale not in ACT_SCALES:
            raise QornnError(f"unknown act scale {act_scale!r}; choose one of {', '.join(ACT_SCALES)}")
        if weight_scale not in WEIGHT_SCALES:
            raise QornnError(f"unknown weight scale {weight_scale!r}; choose one of {', '.join(WEIGHT_SCALES)}")
        if weight_scale == "lsq" and not method.startswith("ste-"):
            raise QornnError(f"learned (lsq) weight scales need a QAT method (ste-*), not {method}")
        if not isinstance(spectral_scale, bool):
            raise QornnError(f"spectral_scale must be true or false, got {spectral_scale!r}")
        if rounding not in ("nearest", "stochastic"):
            raise QornnError(f"rounding must be nearest or stochastic, got {rounding!r}")
        if rounding == "stochastic" and 1 in (weight_bits, recurrent_bits, input_weight_bits, output_bits):
            raise QornnError("stochastic rounding needs weights of 2 bits or more (1 bit is a sign)")
        if isinstance(quant_noise, bool) or not (isinstance(quant_noise, (int, float)) and 0 <= quant_noise < 1):
            raise QornnError(f"quant noise must be a rate in [0, 1), got {quant_noise!r}")
        if recurrent_init not in RECURRENT_INITS:
            raise QornnError(f"unknown recurrent init {recurrent_init!r}; choose one of {', '.join(RECURRENT_INITS)}")
        wbits = recurrent_bits or weight_bits
        if recurrent_init == "hadamard" and hidden_size & (hidden_size - 1):
            raise QornnError(f"recurrent init hadamard: needs a power-of-two hidden size, not {hidden_size}")
        if recurrent_init in GRID_INITS and wbits is not None:  # a quantized W: the init must stay exact
            why = grid_support(recurrent_init, wbits, narrow_range, weight_scale, hidden_size)
            if why is not None:
                raise QornnError(f"recurrent init {recurrent_init}: {why}")
        for what, v in (("input init", input_init), ("output init", output_init)):
            if v not in LAYER_INITS:
                raise QornnError(f"unknown {what} {v!r}; choose one of {', '.join(LAYER_INITS)}")
        if null_input is not None and (not isinstance(null_input, int) or isinstance(null_input, bool)
                                       or not 0 <= null_input < input_size):
            raise QornnError(f"null input must be an input feature index in 0..{input_size - 1}, got {null_input!r}")
        self.config = dict(
            input_size=input_size, hidden_size=hidden_size, output_size=output_size,
            weight_bits=weight_bits, activation=activation, method=method, output_mode=output_mode,
            output_bits=output_bits, bjorck_iters=bjorck_iters, power_iters=power_iters,
            projunn_rank=projunn_rank, projunn_mode=projunn_mode, penalty=penalty,
            recurrent_bits=recurrent_bits, input_weight_bits=input_weight_bits, narrow_range=narrow_range,
            act_bits=act_bits, input_bits=input_bits, act_scale=act_scale, weight_scale=weight_scale,
            spectral_scale=spectral_scale, rounding=rounding, quant_noise=float(quant_noise),
            recurrent_init=recurrent_init, input_init=input_init, output_init=output_init, null_input=null_input,
        )
        self.recurrent_init, self.input_init, self.output_init = recurrent_init, input_init, output_init
        self.null_input = null_input
        self.projunn_rank, self.projunn_mode, self.penalty = projunn_rank, projunn_mode, penalty
        self.input_size, self.hidden_size, self.output_size = input_size, hidden_size, output_size
        self.weight_bits, self.output_bits = weight_bits, output_bits
        # W and U bits: --weight-bits for both unless refined per tensor (None: full precision)
        self.recurrent_bits = recurrent_bits or weight_bits
        self.input_weight_bits = input_weight_bits or weight_bits
        self.narrow_range = narrow_range
        self.activation, self.method, self.output_mode = activation, method, output_mode
        self.bjorck_iters, self.power_iters = bjorck_iters, power_iters
        self.act_bits, self.input_bits = act_bits, input_bits
        self.weight_scale, self.spectral_scale = weight_scale, spectral_scale
        self.rounding, self.quant_noise = rounding, float(quant_noise)

        self.W = nn.Parameter(torch.empty(hidden_size, hidden_size))
        self.U = nn.Parameter(torch.empty(hidden_size, input_size))
        self.V = nn.Parameter(torch.empty(output_size, hidden_size))
        self.c = nn.Parameter(torch.zeros(output_size))
        self.b = nn.Parameter(torch.empty(hidden_size)) if activation == "modrelu" else None
        self.register_buffer("_power_u", torch.zeros(hidden_size))
        # learned weight scales (log2; train/lsq.py), one per quantized tensor
        self.log2_scales = nn.ParameterDict(
            {k: nn.Parameter(torch.zeros(())) for k, bits in self._weight_bits().items() if bits is not None}
            if weight_scale == "lsq" else {})
        # hidden-state and input quantizers of hidden-state QAT (train/act_quant.py)
        self.act = (ActQuant(hidden_size, act_bits, input_bits, act_scale, po2=weight_scale == "po2")
                    if act_bits is not None else None)
        if self.act is not None or len(self.log2_scales):
            self.register_buffer("scales_ready", torch.zeros((), dtype=torch.bool))
        self._cache: torch.Tensor | None = None
        if null_input is not None:  # like nn.Embedding's padding_idx: the column gets no gradient
            keep = torch.ones(hidden_size, input_size)
            keep[:, null_input] = 0
            self.register_buffer("_u_keep", keep, persistent=False)
            self.U.register_hook(lambda g: g * self._u_keep.to(g.dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init_recurrent(self.W, self.recurrent_init, self.recurrent_bits, self.narrow_range)
        for w, how in ((self.U, self.input_init), (self.V, self.output_init)):
            if how == "kaiming-uniform":
                nn.init.kaiming_uniform_(w, a=math.sqrt(5))
            elif how == "kaiming-normal":
                nn.init.kaiming_normal_(w)
            else:
                nn.init.zeros_(w)
        if self.null_input is not None:
            with torch.no_grad():
                self.U[:, self.null_input] = 0
        nn.init.zeros_(self.c)
        if self.b is not None:
            nn.init.uniform_(self.b, -0.01, 0.01)
        self._power_u.copy_(nn.functional.normalize(torch.randn(self.hidden_size), dim=0))

    # -- weights --------------------------------------------------------------------------
    def recurrent_float(self) -> torch.Tensor:
        """The full-precision recurrent matrix the method trains (before quantization)."""
        if self.method in ("ste-bjorck", "fp"):
            if not self.training and self._cache is not None:
                return self._cache
            sigma, u = spectral_norm_estimate(self.W, self.power_iters, self._power_u)
            if self.training:
                self._power_u.copy_(u)
            w = bjorck(self.W / sigma.clamp_min(1e-12), self.bjorck_iters)
            if not self.training:
                self._cache = w.detach()
            return w
        return self.W

    def train(self, mode: bool = True):
        self._cache = None
        return super().train(mode)

    def _load_from_state_dict(self, *args, **kwargs):
        self._cache = None
        return super()._load_from_state_dict(*args, **kwargs)

    @property
    def train_quantized(self) -> bool:
        """Whether training sees quantized weights (QAT) or full precision (PTQ methods)."""
        return self.method.startswith("ste-")

    def regularizer(self) -> torch.Tensor | None:
        """STE-pen's soft orthogonality penalty on the quantized recurrent matrix."""
        if self.method != "ste-pen" or self.penalty == 0:
            return None
        wq = self.effective_weights()["W"]
        eye = torch.eye(self.hidden_size, device=wq.device, dtype=wq.dtype)
        return self.penalty * ((wq.t() @ wq - eye) ** 2).sum()

    def before_step(self) -> None:
        self._w_before = self.W.detach().clone() if self.method.endswith("projunn") else None

    @torch.no_grad()
    def after_step(self) -> None:
        """projUNN: replace the optimizer's update by its rank-k orthogonal counterpart."""
        if getattr(self, "_w_before", None) is not None:
            from .projunn import projunn_update

            self.W.copy_(projunn_update(self._w_before, self.W, self.projunn_rank, self.projunn_mode))
            self._w_before = None

    def _weight_bits(self) -> dict:
        return {"W": self.recurrent_bits, "U": self.input_weight_bits, "V": self.output_bits}

    def quantized_weights(self, quantized: bool = True) -> dict[str, tuple]:
        """name -> (w_q, codes, scale) for W, U, V as the forward pass uses them, w_q == codes * scale
        exactly (the exporter writes these codes and scales); (w, None, None) where not quantized.
        Stochastic rounding and Quant-Noise act in training mode only."""
        floats = {"W": self.recurrent_float(), "U": self.U, "V": self.V}
        out = {}
        for name, bits in self._weight_bits().items():
            w = floats[name]
            if not quantized or bits is None:
                out[name] = (w, None, None)
                continue
            scale = None
            if self.weight_scale == "lsq":
                top = int_range(bits, self.narrow_range)[1]
                scale = scale_from_log2(self.log2_scales[name], lsq_grad_factor(w.numel(), top))
            out[name] = quantize(w, bits, self.narrow_range, mode=self.weight_scale, scale=scale,
                                 stochastic=self.training and self.rounding == "stochastic",
                                 spectral=self.spectral_scale and name == "W",
                                 noise_rate=self.quant_noise if self.training else 0.0,
                                 # r_W = s_W exactly as the integer loop's M_W / 2^S_W
                                 round_scale=on_requant_grid if self.act is not None and name == "W" else None)
        return out

    def effective_weights(self, quantized: bool = True) -> dict[str, torch.Tensor]:
        """W, U, V as the forward pass uses them (fake-quantized, or float if quantized=False)."""
        return {k: v[0] for k, v in self.quantized_weights(quantized).items()}

    @torch.no_grad()
    def init_scales(self, x: torch.Tensor) -> None:
        """Starting points of the trained scales, from the first quantized batch: LSQ weight scales
        at the max-abs scale; s_x and s_h from this batch (train/act_quant.py)."""
        floats = {"W": self.recurrent_float(), "U": self.U, "V": self.V}
        for name, theta in self.log2_scales.items():
            bits, w = self._weight_bits()[name], floats[name]
            lo, hi = int_range(bits, self.narrow_range)
            s = w.abs().mean() if bits == 1 else w.abs().max() / (hi if self.narrow_range else -lo)
            theta.fill_(log2_param(float(s.clamp_min(1e-12))))
        if self.act is not None:
            self.act.initialize(x, float((x @ self.effective_weights()["U"].t()).abs().max()))
        self.scales_ready.fill_(True)

    # -- forward --------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, quantized: bool = True, return_hidden: bool = False,
                hidden_quant: bool = True):
        """x: (batch, time, input). Returns logits (batch, time, out) or (batch, out) for last_step.

        quantized=False: the float network. hidden_quant=False (hidden-state QAT models): quantized
        weights with a float hidden state and input (what post-hoc calibration observes)."""
        if quantized and hasattr(self, "scales_ready") and not self.scales_ready:
            self.init_scales(x)
        qw = self.quantized_weights(quantized)
        w = {k: v[0] for k, v in qw.items()}
        if quantized and hidden_quant and self.act is not None:
            # Hidden-state QAT: the integer loop in floating point, hidden codes of s_h, saturation
            # at h_max, STE/LSQ gradients inside the hand-written BPTT kernel (train/recurrence.py).
            # Evaluation runs it in float64, where it IS the integer loop (every sum below 2^53);
            # float32 training differs only where a float32 rounding crosses a tie (act_quant.py).
            dt = x.dtype if self.training else torch.float64
            xc, s_x = self.act.quantize_input(x.to(dt))
            s_h = self.act.hidden_scale().to(dt)
            r_u = requant_ratio(float(qw["U"][2]) * float(s_x) / float(s_h.detach()))
            u = input_term(xc, w["U"].to(dt), qw["U"][1].to(dt), s_x, s_h, r_u)
            track = self.training and self.act.mode == "max"
            b = self.b.to(dt) if self.b is not None else None
            hidden, a_max = qrecurrence(u, w["W"].to(dt), b, s_h, self.act.h_max, self.activation, track)
            if self.training:
                self.act.observe(x, a_max if track else None)
            s_y = (qw["V"][2].to(dt) * s_h).detach()
            c = on_grid(self.c.to(dt), s_y)  # c on the output grid s_V s_h, as exported
            if not self.training:  # the logits of the output codes, exactly as the simulator's
                out_h = hidden if self.output_mode == "every_step" else hidden[:, -1]
                logits = out_h @ w["V"].to(dt).t() + c
                with torch.no_grad():
                    codes = torch.round(out_h / s_h) @ qw["V"][1].to(dt).t() + torch.round(self.c.to(dt) / s_y)
                logits = value_of(codes * s_y, logits).to(x.dtype)
                hidden = hidden.to(x.dtype)
                return (logits, hidden) if return_hidden else logits
        else:
            # The time loop with a hand-written backward-through-time (train/recurrence.py): the same
            # forward as `reference_loop` below, ~3x faster to train than autograd through the loop.
            hidden = recurrence(x @ w["U"].t(), w["W"], self.b, self.activation)
            c = self.c
        out_h = hidden if self.output_mode == "every_step" else hidden[:, -1]
        logits = out_h @ w["V"].t() + c
        return (logits, hidden) if return_hidden else logits

    def scales(self) -> dict[str, float]:
        """The trained s_x and s_h (hidden-state QAT models) exactly as the forward pass uses them."""
        if self.act is None:
            return {}
        return {"input": float(self.act.input_scale()), "hidden": float(self.act.hidden_scale().detach())}


def reference_loop(ux: torch.Tensor, W: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """The recurrence as a plain autograd loop: the definition `recurrence` must reproduce."""
    h = ux.new_zeros(ux.shape[0], ux.shape[2])
    hs = []
    for t in range(ux.shape[1]):
        z = h @ W.t() + ux[:, t]
        h = modrelu(z, b) if b is not None else torch.relu(z)
        hs.append(h)
    return torch.stack(hs, dim=1)
