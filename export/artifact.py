"""The integer artifact: the contract between export, the simulator, ONNX and hls.

One directory: ``qornn.json`` (the self-describing spec) and ``tensors.safetensors`` (integer
tensors). Needs only NumPy (and safetensors' NumPy API). Every field is validated on load and
every derived width is recomputed, so a hand-edited or truncated artifact is refused with an
error that names the field. Semantics: docs/spec.md.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from qornn.atomic import commit_dir, prepare_dir
from qornn.errors import QornnError

FORMAT = "qornn-integer-artifact"
SCHEMA_VERSION = 1
SPEC_FILE = "qornn.json"
TENSORS_FILE = "tensors.safetensors"
ACTIVATIONS = ("modrelu", "relu")
OUTPUT_MODES = ("every_step", "last_step")
INT64_LIMIT = 2**62      # every intermediate must stay below this in magnitude
FLOAT64_EXACT = 2**53    # integers below this are exact in float64


def weight_range(bits: int) -> tuple[int, int]:
    """k-bit weight codes: [-2^(k-1), 2^(k-1)-1]; one bit is {-1, +1}."""
    return (-1, 1) if bits == 1 else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)


def sym_max(bits: int) -> int:
    """Largest code of a symmetric k-bit activation: 2^(k-1) - 1 (range [-max, max])."""
    return 2 ** (bits - 1) - 1


def signed_bits(lo: int, hi: int) -> int:
    """Fewest bits of a two's-complement type holding every integer in [lo, hi]."""
    b = 1
    while not (-(2 ** (b - 1)) <= lo and hi <= 2 ** (b - 1) - 1):
        b += 1
    return b


@dataclass
class Artifact:
    """Integer tensors and the scalars of the spec. Shapes: W (n, n), U (n, m), V (o, n), b (n,), c (o,)."""

    W: np.ndarray
    U: np.ndarray
    V: np.ndarray
    b: np.ndarray          # modReLU bias, hidden scale (zeros for relu)
    c: np.ndarray          # output bias, output scale s_V * s_h
    activation: str
    output_mode: str
    weight_bits: int
    input_bits: int
    act_bits: int
    output_bits: int
    m_w: int               # requant multipliers and shift: z = round_half_up((m_w*aW + m_u*aU) / 2^shift)
    m_u: int
    shift: int
    input_scale: float
    w_scale: float
    u_scale: float
    hidden_scale: float
    v_scale: float
    provenance: dict = field(default_factory=dict)

    # -- sizes ------------------------------------------------------------------------------
    @property
    def hidden_size(self) -> int:
        return int(self.W.shape[0])

    @property
    def input_size(self) -> int:
        return int(self.U.shape[1])

    @property
    def output_size(self) -> int:
        return int(self.V.shape[0])

    @property
    def h_max(self) -> int:
        return sym_max(self.act_bits)

    @property
    def h_min(self) -> int:
        return 0 if self.activation == "relu" else -self.h_max

    @property
    def x_max(self) -> int:
        return sym_max(self.input_bits)

    @property
    def output_scale(self) -> float:
        return self.v_scale * self.hidden_scale

    # -- derived widths: worst case over all inputs, from bits and sizes alone -------------
    def bounds(self) -> dict[str, int]:
        """Largest magnitude each intermediate can take (see docs/spec.md, 'Widths')."""
        n, m = self.hidden_size, self.input_size
        wmax = max(abs(v) for v in weight_range(self.weight_bits))
        vmax = max(abs(v) for v in weight_range(self.output_bits))
        aw = n * wmax * self.h_max
        au = m * wmax * self.x_max
        pre = self.m_w * aw + self.m_u * au
        z = (pre + (1 << self.shift >> 1)) >> self.shift
        bmax = int(np.abs(self.b).max()) if self.b.size else 0
        zb = z + bmax
        cmax = int(np.abs(self.c).max()) if self.c.size else 0
        out = n * vmax * self.h_max + cmax
        return {"acc_w": aw, "acc_u": au, "pre": pre + (1 << self.shift >> 1), "z": z, "zb": zb, "out": out}

    def widths(self) -> dict[str, int]:
        """Two's-complement bit widths that hold every intermediate without wrapping."""
        return {k: signed_bits(-v, v) for k, v in self.bounds().items()} | {
            "b": signed_bits(int(self.b.min(initial=0)), int(self.b.max(initial=0))),
            "c": signed_bits(int(self.c.min(initial=0)), int(self.c.max(initial=0))),
        }

    def float64_exact(self) -> bool:
        """True when every intermediate is an integer below 2^53, so float64 BLAS is exact."""
        return max(self.bounds().values()) < FLOAT64_EXACT

    def spec_dict(self) -> dict:
        return {
            "format": FORMAT,
            "schema_version": SCHEMA_VERSION,
            "model": {
                "input_size": self.input_size, "hidden_size": self.hidden_size, "output_size": self.output_size,
                "activation": self.activation, "output_mode": self.output_mode,
            },
            "bits": {"weight": self.weight_bits, "input": self.input_bits, "act": self.act_bits, "output": self.output_bits},
            "requant": {"m_w": self.m_w, "m_u": self.m_u, "shift": self.shift, "rounding": "half_up", "saturation": "clamp"},
            "scales": {
                "input": self.input_scale, "W": self.w_scale, "U": self.u_scale, "hidden": self.hidden_scale,
                "V": self.v_scale, "output": self.output_scale,
            },
            "ranges": {"x": [-self.x_max, self.x_max], "h": [self.h_min, self.h_max]},
            "widths": self.widths(),
            "tensors": {k: {"shape": list(getattr(self, k).shape), "dtype": _DTYPES[k]} for k in _DTYPES},
            "tensors_sha256": self.tensors_hash(),
            "provenance": self.provenance,
        }

    def tensors_hash(self) -> str:
        h = hashlib.sha256()
        for k in _DTYPES:
            a = np.ascontiguousarray(getattr(self, k).astype(_DTYPES[k]))
            h.update(k.encode() + str(a.shape).encode() + a.tobytes())
        return h.hexdigest()

    def content_hash(self) -> str:
        """Hash of everything that defines the integer function (used to cache compiled firmware)."""
        spec = self.spec_dict()
        spec.pop("provenance")
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()

    def validate(self) -> "Artifact":
        _validate(self)
        return self


_DTYPES = {"W": "int8", "U": "int8", "V": "int8", "b": "int32", "c": "int64"}


def _fail(path: str, msg: str):
    raise QornnError(f"artifact field '{path}': {msg}")


def _check_int(path: str, v, lo: int, hi: int) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        _fail(path, f"expected an integer in {lo}..{hi}, got {v!r}")
    return v


def _check_scale(path: str, v) -> float:
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v <= 0:
        _fail(path, f"expected a finite positive number, got {v!r}")
    return float(v)


def _validate(a: Artifact) -> None:
    _check_int("bits.weight", a.weight_bits, 1, 8)
    _check_int("bits.input", a.input_bits, 2, 16)
    _check_int("bits.act", a.act_bits, 2, 16)
    _check_int("bits.output", a.output_bits, 1, 8)
    _check_int("requant.shift", a.shift, 0, 62)
    _check_int("requant.m_w", a.m_w, 0, 2**31 - 1)
    _check_int("requant.m_u", a.m_u, 0, 2**31 - 1)
    if a.activation not in ACTIVATIONS:
        _fail("model.activation", f"expected one of {ACTIVATIONS}, got {a.activation!r}")
    if a.output_mode not in OUTPUT_MODES:
        _fail("model.output_mode", f"expected one of {OUTPUT_MODES}, got {a.output_mode!r}")
    for k, name in (("input_scale", "input"), ("w_scale", "W"), ("u_scale", "U"), ("hidden_scale", "hidden"),
                    ("v_scale", "V")):
        _check_scale(f"scales.{name}", getattr(a, k))
    n = a.W.shape[0] if a.W.ndim == 2 else -1
    expect = {"W": (n, n), "U": (n, a.U.shape[1] if a.U.ndim == 2 else -1),
              "V": (a.V.shape[0] if a.V.ndim == 2 else -1, n), "b": (n,), "c": (a.V.shape[0] if a.V.ndim == 2 else -1,)}
    for k, shape in expect.items():
        t = getattr(a, k)
        if t.shape != shape or min(shape) <= 0:
            _fail(f"tensors.{k}.shape", f"expected {shape}, got {tuple(t.shape)}")
        if not np.issubdtype(t.dtype, np.integer):
            _fail(f"tensors.{k}.dtype", f"expected an integer tensor, got {t.dtype}")
    for k, bits in (("W", a.weight_bits), ("U", a.weight_bits), ("V", a.output_bits)):
        lo, hi = weight_range(bits)
        t = getattr(a, k)
        if t.min() < lo or t.max() > hi:
            _fail(f"tensors.{k}", f"values {int(t.min())}..{int(t.max())} outside the {bits}-bit range {lo}..{hi}")
        if bits == 1 and np.any(t == 0):
            _fail(f"tensors.{k}", "1-bit weights must be -1 or +1")
    if a.activation == "relu" and np.any(a.b != 0):
        _fail("tensors.b", "relu has no bias; b must be zero")
    if np.abs(a.b).max() >= 2**31 or np.abs(a.c).max() >= INT64_LIMIT:
        _fail("tensors.b", "bias out of range")
    bounds = a.bounds()
    worst = max(bounds, key=bounds.get)
    if bounds[worst] >= INT64_LIMIT:
        _fail(f"widths.{worst}", f"intermediate bound {bounds[worst]} does not fit in 63 bits; lower the bit widths")


def save_artifact(a: Artifact, out, force: bool = False, extra_files: dict[str, bytes] | None = None) -> Path:
    """Validate and write atomically; `extra_files` (e.g. model.onnx) land in the same rename."""
    from safetensors.numpy import save_file

    a.validate()
    tmp = prepare_dir(out, force, marker=SPEC_FILE)
    try:
        save_file({k: np.ascontiguousarray(getattr(a, k).astype(_DTYPES[k])) for k in _DTYPES}, str(tmp / TENSORS_FILE))
        (tmp / SPEC_FILE).write_text(json.dumps(a.spec_dict(), indent=2) + "\n")
        for name, data in (extra_files or {}).items():
            (tmp / name).write_bytes(data)
        commit_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Path(out)


def _get(d: dict, path: str):
    cur = d
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            _fail(path, "missing")
        cur = cur[part]
    return cur


def load_artifact(path) -> Artifact:
    """Load and fully validate an artifact directory; any defect is a one-line QornnError."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    path = Path(path)
    if not path.is_dir():
        raise QornnError(f"artifact {path} not found (expected a directory written by `qornn export`)")
    spec_path, tens_path = path / SPEC_FILE, path / TENSORS_FILE
    if not spec_path.is_file() or not tens_path.is_file():
        raise QornnError(f"{path} is not a qornn artifact: {SPEC_FILE} or {TENSORS_FILE} missing")
    try:
        spec = json.loads(spec_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise QornnError(f"{spec_path}: not valid JSON ({e.msg if hasattr(e, 'msg') else e})") from None
    if not isinstance(spec, dict) or spec.get("format") != FORMAT:
        _fail("format", f"expected {FORMAT!r}, got {spec.get('format') if isinstance(spec, dict) else spec!r}")
    if spec.get("schema_version") != SCHEMA_VERSION:
        _fail("schema_version", f"this qornn reads version {SCHEMA_VERSION}, got {spec.get('schema_version')!r}")
    try:
        t = load_file(str(tens_path))
    except (SafetensorError, OSError, ValueError) as e:
        raise QornnError(f"{tens_path}: corrupt tensor file ({e})") from None
    for k, dt in _DTYPES.items():
        if k not in t:
            _fail(f"tensors.{k}", f"missing from {TENSORS_FILE}")
        if str(t[k].dtype) != dt:
            _fail(f"tensors.{k}.dtype", f"expected {dt}, got {t[k].dtype}")
        if list(t[k].shape) != _get(spec, f"tensors.{k}.shape"):
            _fail(f"tensors.{k}.shape", f"spec says {_get(spec, f'tensors.{k}.shape')}, file holds {list(t[k].shape)}")
    a = Artifact(
        W=t["W"], U=t["U"], V=t["V"], b=t["b"], c=t["c"],
        activation=_get(spec, "model.activation"), output_mode=_get(spec, "model.output_mode"),
        weight_bits=_get(spec, "bits.weight"), input_bits=_get(spec, "bits.input"),
        act_bits=_get(spec, "bits.act"), output_bits=_get(spec, "bits.output"),
        m_w=_get(spec, "requant.m_w"), m_u=_get(spec, "requant.m_u"), shift=_get(spec, "requant.shift"),
        input_scale=_get(spec, "scales.input"), w_scale=_get(spec, "scales.W"), u_scale=_get(spec, "scales.U"),
        hidden_scale=_get(spec, "scales.hidden"), v_scale=_get(spec, "scales.V"),
        provenance=spec.get("provenance", {}),
    )
    for key, value in (("model.input_size", a.input_size), ("model.hidden_size", a.hidden_size),
                       ("model.output_size", a.output_size)):
        if _get(spec, key) != value:
            _fail(key, f"spec says {_get(spec, key)!r}, tensors say {value}")
    if _get(spec, "requant.rounding") != "half_up" or _get(spec, "requant.saturation") != "clamp":
        _fail("requant.rounding", "only rounding 'half_up' with saturation 'clamp' is defined")
    a.validate()
    if _get(spec, "widths") != a.widths():
        _fail("widths", f"stored widths {spec['widths']} disagree with the derived {a.widths()}")
    if _get(spec, "tensors_sha256") != a.tensors_hash():
        _fail("tensors_sha256", "tensor contents do not match the spec's hash (file edited or corrupt)")
    return a
