"""The QORNN model: h_t = act(W h_{t-1} + U x_t), y_t = V h_t + c, with W and U quantized.

A plain ``torch.nn.Module``: drop it into any training loop. The recurrent matrix comes from
the training method's parametrization (``recurrent_float``); the forward pass always uses its
k-bit fake-quantized version (straight-through estimator) unless ``quantized=False``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from qornn.errors import QornnError

from .bjorck import bjorck, spectral_norm_estimate
from .quantizers import check_bits, fake_quantize
from .recurrence import recurrence

ACTIVATIONS = ("modrelu", "relu")
OUTPUT_MODES = ("every_step", "last_step")
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
        if method == "ste-pen" and not (penalty >= 0 and math.isfinite(penalty)):
            raise QornnError(f"penalty must be a finite number >= 0, got {penalty!r}")
        if weight_bits is None and method.startswith("ste-"):
            raise QornnError(f"method {method} trains quantized weights; give weight bits")
        self.config = dict(
            input_size=input_size, hidden_size=hidden_size, output_size=output_size,
            weight_bits=weight_bits, activation=activation, method=method, output_mode=output_mode,
            output_bits=output_bits, bjorck_iters=bjorck_iters, power_iters=power_iters,
            projunn_rank=projunn_rank, projunn_mode=projunn_mode, penalty=penalty,
            recurrent_bits=recurrent_bits, input_weight_bits=input_weight_bits, narrow_range=narrow_range,
        )
        self.projunn_rank, self.projunn_mode, self.penalty = projunn_rank, projunn_mode, penalty
        self.input_size, self.hidden_size, self.output_size = input_size, hidden_size, output_size
        self.weight_bits, self.output_bits = weight_bits, output_bits
        # W and U bits: --weight-bits for both unless refined per tensor (None: full precision)
        self.recurrent_bits = recurrent_bits or weight_bits
        self.input_weight_bits = input_weight_bits or weight_bits
        self.narrow_range = narrow_range
        self.activation, self.method, self.output_mode = activation, method, output_mode
        self.bjorck_iters, self.power_iters = bjorck_iters, power_iters

        self.W = nn.Parameter(torch.empty(hidden_size, hidden_size))
        self.U = nn.Parameter(torch.empty(hidden_size, input_size))
        self.V = nn.Parameter(torch.empty(output_size, hidden_size))
        self.c = nn.Parameter(torch.zeros(output_size))
        self.b = nn.Parameter(torch.empty(hidden_size)) if activation == "modrelu" else None
        self.register_buffer("_power_u", torch.zeros(hidden_size))
        self._cache: torch.Tensor | None = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.orthogonal_(self.W)
        nn.init.kaiming_uniform_(self.U, a=math.sqrt(5))
        nn.init.kaiming_uniform_(self.V, a=math.sqrt(5))
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
        wq = fake_quantize(self.W, self.recurrent_bits, self.narrow_range)
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

    def effective_weights(self, quantized: bool = True) -> dict[str, torch.Tensor]:
        """W, U, V as the forward pass uses them (fake-quantized, or float if quantized=False)."""
        q = quantized
        return {
            "W": fake_quantize(self.recurrent_float(), self.recurrent_bits if q else None, self.narrow_range),
            "U": fake_quantize(self.U, self.input_weight_bits if q else None, self.narrow_range),
            "V": fake_quantize(self.V, self.output_bits if q else None, self.narrow_range),
        }

    # -- forward --------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, quantized: bool = True, return_hidden: bool = False):
        """x: (batch, time, input). Returns logits (batch, time, out) or (batch, out) for last_step."""
        w = self.effective_weights(quantized)
        ux = x @ w["U"].t()
        # The time loop with a hand-written backward-through-time (train/recurrence.py): the same
        # forward as `reference_loop` below, ~3x faster to train than autograd through the loop.
        hidden = recurrence(ux, w["W"], self.b, self.activation)
        out_h = hidden if self.output_mode == "every_step" else hidden[:, -1]
        logits = out_h @ w["V"].t() + self.c
        return (logits, hidden) if return_hidden else logits


def reference_loop(ux: torch.Tensor, W: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """The recurrence as a plain autograd loop: the definition `recurrence` must reproduce."""
    h = ux.new_zeros(ux.shape[0], ux.shape[2])
    hs = []
    for t in range(ux.shape[1]):
        z = h @ W.t() + ux[:, t]
        h = modrelu(z, b) if b is not None else torch.relu(z)
        hs.append(h)
    return torch.stack(hs, dim=1)
