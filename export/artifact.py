"""The integer artifact: the contract between export, the simulator, ONNX and the hardware stages.

One directory: ``qornn.json`` (the self-describing spec) and ``tensors.safetensors`` (integer
tensors). Needs only NumPy (and safetensors' NumPy API). Every field is validated on load, every
derived quantity (requant constants, widths, ranges, the output scale) is recomputed and must
match, and one SHA-256 covers every field that affects the integers, so a hand-edited, truncated
or forged artifact is refused with an error that names the field. Semantics: docs/spec.md.

Every bound is computed with Python integers (never NumPy scalars, which wrap at 2^63).
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
SCHEMA_VERSION = 2
SPEC_FILE = "qornn.json"
TENSORS_FILE = "tensors.safetensors"
ACTIVATIONS = ("modrelu", "relu")
OUTPUT_MODES = ("every_step", "last_step")
SCALE_MODES = ("max", "lsq", "po2")
WEIGHTS = ("W", "U", "V")
INT64_LIMIT = 2**62      # every intermediate must stay below this in magnitude
FLOAT64_EXACT = 2**53    # integers below this are exact in float64
REQUANT_BITS = 16        # requant multipliers M < 2^16, relative error <= 2^-16
MAX_SHIFT = 62
B_LIMIT = 2**31 - 1      # |b| <= B_LIMIT (b is stored as int32)
_DTYPES = {"W": "int8", "U": "int8", "V": "int8", "b": "int32", "c": "int64"}


def weight_range(bits: int, narrow: bool = False) -> tuple[int, int]:
    """Codes of a k-bit weight: [-2^(k-1), 2^(k-1)-1]; narrow range [-(2^(k-1)-1), 2^(k-1)-1]
    (k = 2 narrow is ternary); one bit is {-1, +1} (narrow is not defined for one bit)."""
    if bits == 1:
        return -1, 1
    top = 2 ** (bits - 1) - 1
    return (-top if narrow else -top - 1), top


def sym_max(bits: int) -> int:
    """Largest code of a symmetric k-bit activation: 2^(k-1) - 1 (range [-max, max])."""
    return 2 ** (bits - 1) - 1


def signed_bits(lo: int, hi: int) -> int:
    """Fewest bits of a two's-complement type holding every integer in [lo, hi] (Python ints)."""
    lo, hi = int(lo), int(hi)
    return max((-lo - 1).bit_length() if lo < 0 else 0, hi.bit_length() if hi > 0 else 0) + 1


def requant_constant(r: float) -> tuple[int, int]:
    """(M, S) with M / 2^S the nearest 16-bit approximation of the positive ratio r.

    S is the largest shift with M = floor(r 2^S + 1/2) < 2^16, so 2^15 <= M < 2^16 and the
    relative error |M 2^-S - r| / r is at most 2^-16; then factors of two are taken out of M
    (M odd or S = 0), so a power-of-two ratio gives M = 1 and the product is a plain shift.
    Exact and platform independent: r 2^S is a power-of-two scaling of a float64."""
    if not (isinstance(r, float) and math.isfinite(r) and r > 0):
        raise QornnError(f"cannot requantize: scale ratio {r!r} is not a finite positive number")
    _, e = math.frexp(r)                     # r = f 2^e, 1/2 <= f < 1
    S = REQUANT_BITS - e                     # r 2^S = f 2^16 in [2^15, 2^16)
    M = math.floor(math.ldexp(r, S) + 0.5) if S >= 0 else None
    if M is not None and M >= 2**REQUANT_BITS:
        S -= 1
        M = math.floor(math.ldexp(r, S) + 0.5)
    if S < 0:
        raise QornnError(f"scale ratio {r:.4g} is too large for the integer requantization (it needs "
                         f"a multiplier >= 2^{REQUANT_BITS}); raise the hidden-state bits or check the calibration")
    while M % 2 == 0 and S > 0:
        M //= 2
        S -= 1
    if S > MAX_SHIFT:
        raise QornnError(f"scale ratio {r:.4g} is too small for the integer requantization (it needs a shift "
                         f"> {MAX_SHIFT}): that product cannot move the hidden state; lower its input bits")
    return M, S


def requant_error(M: int, S: int, r: float) -> float:
    """Relative error |M 2^-S - r| / r of a requant constant."""
    return abs(math.ldexp(M, -S) - r) / r


def is_power_of_two(x: float) -> bool:
    return isinstance(x, float) and x > 0 and math.isfinite(x) and math.frexp(x)[0] == 0.5


@dataclass
class Artifact:
    """Integer tensors and the scalars of the spec. Shapes: W (n, n), U (n, m), V (o, n), b (n,), c (o,).

    `recurrent_bits`, `input_weight_bits`, `output_bits` are the widths of W, U, V; `narrow`
    names the weight tensors that use the narrow (symmetric) range. The requant constants
    (m_w, shift_w, m_u, shift_u) follow from the scales (`requant_constant`); `shift`,
    `mult_w`, `mult_u` are the aligned form every executor runs (docs/spec.md, "One step")."""

    W: np.ndarray
    U: np.ndarray
    V: np.ndarray
    b: np.ndarray          # modReLU bias, hidden scale (zeros for relu)
    c: np.ndarray          # output bias, output scale s_V * s_h
    activation: str
    output_mode: str
    recurrent_bits: int
    input_weight_bits: int
    output_bits: int
    input_bits: int
    act_bits: int
    m_w: int
    shift_w: int
    m_u: int
    shift_u: int
    input_scale: float
    w_scale: float
    u_scale: float
    hidden_scale: float
    v_scale: float
    narrow: tuple = ()
    scale_mode: str = "max"
    provenance: dict = field(default_factory=dict)

    # -- sizes and ranges --------------------------------------------------------------------
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

    def bits_of(self, name: str) -> int:
        return {"W": self.recurrent_bits, "U": self.input_weight_bits, "V": self.output_bits}[name]

    def code_range(self, name: str) -> tuple[int, int]:
        """Integer range of the weight tensor `name` ('W', 'U' or 'V')."""
        return weight_range(self.bits_of(name), name in self.narrow)

    def code_max(self, name: str) -> int:
        lo, hi = self.code_range(name)
        return max(-lo, hi)

    # -- requantization: the aligned form ---------------------------------------------------
    @property
    def shift(self) -> int:
        """The one rounding shift S = max(S_W, S_U)."""
        return max(self.shift_w, self.shift_u)

    @property
    def mult_w(self) -> int:
        """M_W 2^(S - S_W): the multiplier of W.h once both products share the shift S."""
        return self.m_w << (self.shift - self.shift_w)

    @property
    def mult_u(self) -> int:
        return self.m_u << (self.shift - self.shift_u)

    @property
    def ratios(self) -> tuple[float, float]:
        """The real ratios r_W = s_W and r_U = s_U s_x / s_h that M / 2^S approximate."""
        return self.w_scale, (self.u_scale * self.input_scale) / self.hidden_scale

    def requant_errors(self) -> tuple[float, float]:
        r_w, r_u = self.ratios
        return requant_error(self.m_w, self.shift_w, r_w), requant_error(self.m_u, self.shift_u, r_u)

    # -- derived widths: worst case over all inputs, from bits, sizes and constants --------
    def bounds(self) -> dict[str, int]:
        """Largest magnitude each intermediate can take (docs/spec.md, 'Widths'); Python ints."""
        n, m = self.hidden_size, self.input_size
        aw = n * self.code_max("W") * self.h_max
        au = m * self.code_max("U") * self.x_max
        S = self.shift
        half = (1 << S) >> 1
        p = self.mult_w * aw + self.mult_u * au
        z = max((p + half) >> S, -((-p + half) >> S))
        bmax = max(abs(int(self.b.min(initial=0))), abs(int(self.b.max(initial=0))))
        cmax = max(abs(int(self.c.min(initial=0))), abs(int(self.c.max(initial=0))))
        return {"acc_w": aw, "acc_u": au, "pre": p + half, "z": z, "zb": z + bmax,
                "out": n * self.code_max("V") * self.h_max + cmax}

    def widths(self) -> dict[str, int]:
        """Two's-complement bit widths that hold every intermediate without wrapping."""
        return {k: signed_bits(-v, v) for k, v in self.bounds().items()} | {
            "b": signed_bits(int(self.b.min(initial=0)), int(self.b.max(initial=0))),
            "c": signed_bits(int(self.c.min(initial=0)), int(self.c.max(initial=0))),
        }

    def float64_exact(self) -> bool:
        """True when every intermediate is an integer below 2^53, so float64 BLAS is exact."""
        return max(self.bounds().values()) < FLOAT64_EXACT

    # -- serialization ------------------------------------------------------------------------
    def semantics(self) -> dict:
        """Every JSON field that affects the integers or their real values (what the hash covers)."""
        return {
            "model": {"input_size": self.input_size, "hidden_size": self.hidden_size,
                      "output_size": self.output_size, "activation": self.activation,
                      "output_mode": self.output_mode},
            "bits": {"W": self.recurrent_bits, "U": self.input_weight_bits, "V": self.output_bits,
                     "x": self.input_bits, "h": self.act_bits},
            "narrow_range": {k: k in self.narrow for k in WEIGHTS},
            "requant": {"m_w": self.m_w, "shift_w": self.shift_w, "m_u": self.m_u, "shift_u": self.shift_u,
                        "rounding": "half_up", "saturation": "clamp"},
            "scales": {"mode": self.scale_mode, "input": self.input_scale, "W": self.w_scale, "U": self.u_scale,
                       "hidden": self.hidden_scale, "V": self.v_scale, "output": self.output_scale},
            "tensors": {k: {"shape": list(getattr(self, k).shape), "dtype": _DTYPES[k]} for k in _DTYPES},
        }

    def spec_dict(self) -> dict:
        return {"format": FORMAT, "schema_version": SCHEMA_VERSION} | self.semantics() | {
            "ranges": {"x": [-self.x_max, self.x_max], "h": [self.h_min, self.h_max]}
            | {k: list(self.code_range(k)) for k in WEIGHTS},
            "widths": self.widths(),
            "content_sha256": self.content_hash(),
            "provenance": self.provenance,
        }

    def content_hash(self) -> str:
        """SHA-256 of the canonical JSON of `semantics()` followed by the tensors' bytes
        (docs/spec.md, 'Content hash'). Provenance is not covered; everything else is."""
        h = hashlib.sha256(canonical_json(self.semantics()).encode("utf-8"))
        for k in _DTYPES:
            h.update(np.ascontiguousarray(getattr(self, k), dtype=np.dtype(_DTYPES[k]).newbyteorder("<")).tobytes())
        return h.hexdigest()

    def validate(self) -> "Artifact":
        _validate(self)
        return self


def check_generated_from(meta: dict, art, what: str, command: str) -> None:
    """A hardware project records the content hash of its artifact (meta["artifact"]); refuse to
    check it against another one. `art`: an Artifact, a content hash, or None (no check)."""
    if art is None:
        return
    want = art if isinstance(art, str) else art.content_hash()
    have = meta["artifact"]["content_hash"]
    if want != have:
        raise QornnError(f"this {what} was generated from a different artifact ({what.split()[-1]} {have[:12]}, "
                         f"given {want[:12]}); regenerate it with `{command}`")


def canonical_json(obj) -> str:
    """Sorted keys, no whitespace, ASCII, floats in Python's shortest round-trip form."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def _fail(path: str, msg: str):
    raise QornnError(f"artifact field '{path}': {msg}")


def _check_int(path: str, v, lo: int, hi: int) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        _fail(path, f"expected an integer in {lo}..{hi}, got {_short(v)}")
    return v


def _check_scale(path: str, v) -> float:
    if not isinstance(v, float) or not math.isfinite(v) or v <= 0:
        _fail(path, f"expected a finite positive number, got {_short(v)}")
    return v


def _short(v) -> str:
    s = repr(v)
    return s if len(s) <= 40 else s[:37] + "..."


def _validate(a: Artifact) -> None:
    """Every field's type and range, shapes, codes against their bit widths, the derived
    requant constants, and every bound below 2^62. Names the field at fault."""
    for path, v, lo, hi in (("bits.W", a.recurrent_bits, 1, 8), ("bits.U", a.input_weight_bits, 1, 8),
                            ("bits.V", a.output_bits, 1, 8), ("bits.x", a.input_bits, 2, 16),
                            ("bits.h", a.act_bits, 2, 16), ("requant.m_w", a.m_w, 1, 2**REQUANT_BITS - 1),
                            ("requant.m_u", a.m_u, 1, 2**REQUANT_BITS - 1),
                            ("requant.shift_w", a.shift_w, 0, MAX_SHIFT), ("requant.shift_u", a.shift_u, 0, MAX_SHIFT)):
        _check_int(path, v, lo, hi)
    if a.activation not in ACTIVATIONS:
        _fail("model.activation", f"expected one of {', '.join(ACTIVATIONS)}, got {_short(a.activation)}")
    if a.output_mode not in OUTPUT_MODES:
        _fail("model.output_mode", f"expected one of {', '.join(OUTPUT_MODES)}, got {_short(a.output_mode)}")
    if a.scale_mode not in SCALE_MODES:
        _fail("scales.mode", f"expected one of {', '.join(SCALE_MODES)}, got {_short(a.scale_mode)}")
    if not isinstance(a.narrow, tuple) or any(k not in WEIGHTS for k in a.narrow) or len(set(a.narrow)) != len(a.narrow):
        _fail("narrow_range", f"expected a subset of {WEIGHTS}, got {_short(a.narrow)}")
    for k in a.narrow:
        if a.bits_of(k) == 1:
            _fail(f"narrow_range.{k}", "the narrow range is not defined for 1-bit weights (use 2 bits: ternary)")
    for k, name in (("input_scale", "input"), ("w_scale", "W"), ("u_scale", "U"), ("hidden_scale", "hidden"),
                    ("v_scale", "V")):
        _check_scale(f"scales.{name}", getattr(a, k))
    if a.scale_mode == "po2":
        for k, name in (("input_scale", "input"), ("w_scale", "W"), ("u_scale", "U"), ("hidden_scale", "hidden"),
                        ("v_scale", "V")):
            if not is_power_of_two(getattr(a, k)):
                _fail(f"scales.{name}", f"scales.mode is po2 but {getattr(a, k)!r} is not a power of two")
    for k in _DTYPES:
        t = getattr(a, k)
        if not isinstance(t, np.ndarray) or not np.issubdtype(t.dtype, np.integer):
            _fail(f"tensors.{k}.dtype", f"expected an integer array, got {getattr(t, 'dtype', type(t).__name__)}")
    n = a.W.shape[0] if a.W.ndim == 2 else -1
    m = a.U.shape[1] if a.U.ndim == 2 else -1
    o = a.V.shape[0] if a.V.ndim == 2 else -1
    for k, shape in {"W": (n, n), "U": (n, m), "V": (o, n), "b": (n,), "c": (o,)}.items():
        t = getattr(a, k)
        if t.shape != shape or min(shape) <= 0:
            _fail(f"tensors.{k}.shape", f"expected {shape}, got {tuple(t.shape)}")
    for k in WEIGHTS:
        lo, hi = a.code_range(k)
        t = getattr(a, k)
        tmin, tmax = int(t.min()), int(t.max())
        if tmin < lo or tmax > hi:
            _fail(f"tensors.{k}", f"codes {tmin}..{tmax} outside the range {lo}..{hi} of {a.bits_of(k)}-bit "
                  f"{'narrow ' if k in a.narrow else ''}weights")
        if a.bits_of(k) == 1 and np.any(t == 0):
            _fail(f"tensors.{k}", "1-bit weights must be -1 or +1")
    bmin, bmax = int(a.b.min()), int(a.b.max())
    if a.activation == "relu" and (bmin != 0 or bmax != 0):
        _fail("tensors.b", "relu has no bias; b must be zero")
    if bmin < -B_LIMIT or bmax > B_LIMIT:
        _fail("tensors.b", f"bias codes {bmin}..{bmax} outside -{B_LIMIT}..{B_LIMIT}")
    cmin, cmax = int(a.c.min()), int(a.c.max())
    if max(-cmin, cmax) >= INT64_LIMIT:
        _fail("tensors.c", f"output bias codes {cmin}..{cmax} reach 2^62")
    r_w, r_u = a.ratios
    for (M, S), r, name in (((a.m_w, a.shift_w), r_w, "w"), ((a.m_u, a.shift_u), r_u, "u")):
        try:
            want = requant_constant(r)
        except QornnError as e:
            _fail(f"requant.m_{name}", str(e))
        if (M, S) != want:
            _fail(f"requant.m_{name}", f"(m_{name}, shift_{name}) = ({M}, {S}) but the scales give {want} "
                  f"(docs/spec.md, 'How the integers are chosen')")
    bounds = a.bounds()
    worst = max(bounds, key=bounds.get)
    if bounds[worst] >= INT64_LIMIT:
        where = "tensors.c" if worst == "out" else f"widths.{worst}"
        _fail(where, f"intermediate bound {bounds[worst]} reaches 2^62; lower the bit widths, sizes or biases")


# -- files -----------------------------------------------------------------------------------
def save_artifact(a: Artifact, out, force: bool = False, extra_files: dict[str, bytes] | None = None) -> Path:
    """Validate and write atomically; `extra_files` (e.g. model.onnx) land in the same rename."""
    from safetensors.numpy import save_file

    a.validate()
    tmp = prepare_dir(out, force, marker=SPEC_FILE)
    try:
        save_file({k: np.ascontiguousarray(getattr(a, k).astype(_DTYPES[k])) for k in _DTYPES}, str(tmp / TENSORS_FILE))
        (tmp / SPEC_FILE).write_text(json.dumps(a.spec_dict(), indent=2, allow_nan=False) + "\n")
        for name, data in (extra_files or {}).items():
            (tmp / name).write_bytes(data)
        commit_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Path(out)


_SECTIONS = {
    "model": {"input_size", "hidden_size", "output_size", "activation", "output_mode"},
    "bits": {"W", "U", "V", "x", "h"},
    "narrow_range": set(WEIGHTS),
    "requant": {"m_w", "shift_w", "m_u", "shift_u", "rounding", "saturation"},
    "scales": {"mode", "input", "W", "U", "hidden", "V", "output"},
    "ranges": {"x", "h", *WEIGHTS},
    "widths": {"acc_w", "acc_u", "pre", "z", "zb", "out", "b", "c"},
    "tensors": set(_DTYPES),
}
_TOP = {"format", "schema_version", "content_sha256", "provenance", *_SECTIONS}


def _get(d: dict, path: str):
    cur = d
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            _fail(path, "missing")
        cur = cur[part]
    return cur


def _check_keys(spec: dict) -> None:
    """No unknown or missing keys: a misspelt field must not be silently ignored."""
    extra = set(spec) - _TOP
    if extra:
        _fail(sorted(extra)[0], "unknown field")
    for sec, keys in _SECTIONS.items():
        val = _get(spec, sec)
        if not isinstance(val, dict):
            _fail(sec, f"expected an object, got {_short(val)}")
        if set(val) - keys:
            _fail(f"{sec}.{sorted(set(val) - keys)[0]}", "unknown field")
        if keys - set(val):
            _fail(f"{sec}.{sorted(keys - set(val))[0]}", "missing")
    for k in _DTYPES:
        t = spec["tensors"][k]
        if not isinstance(t, dict) or set(t) != {"shape", "dtype"}:
            _fail(f"tensors.{k}", "expected an object with 'shape' and 'dtype'")
    if "provenance" not in spec:
        _fail("provenance", "missing")
    if not isinstance(spec["provenance"], dict):
        _fail("provenance", "expected an object")


def load_artifact(path) -> Artifact:
    """Load and fully validate an artifact directory; any defect is a one-line QornnError."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    from qornn.jsonio import read_json

    path = Path(path)
    if not path.is_dir():
        raise QornnError(f"artifact {path} not found (expected a directory written by `qornn export`)")
    spec_path, tens_path = path / SPEC_FILE, path / TENSORS_FILE
    if not spec_path.is_file() or not tens_path.is_file():
        raise QornnError(f"{path} is not a qornn artifact: {SPEC_FILE} or {TENSORS_FILE} missing")
    spec = read_json(spec_path, "artifact spec")
    if not isinstance(spec, dict) or spec.get("format") != FORMAT:
        _fail("format", f"expected {FORMAT!r}, got {_short(spec.get('format') if isinstance(spec, dict) else spec)}")
    version = spec.get("schema_version")
    if type(version) is not int or version != SCHEMA_VERSION:
        if isinstance(version, int) and not isinstance(version, bool) and version < SCHEMA_VERSION:
            _fail("schema_version", f"version {version} artifacts are no longer read (their hash did not cover "
                  f"every field); re-export the run with `qornn export RUN --out {path} --force`")
        _fail("schema_version", f"this qornn reads version {SCHEMA_VERSION}, got {_short(version)}")
    _check_keys(spec)
    try:
        t = load_file(str(tens_path))
    except (SafetensorError, OSError, ValueError) as e:
        raise QornnError(f"{tens_path}: corrupt tensor file ({str(e).splitlines()[0][:160]})") from None
    if set(t) != set(_DTYPES):
        extra = sorted(set(t) ^ set(_DTYPES))[0]
        _fail(f"tensors.{extra}", f"{'missing from' if extra in _DTYPES else 'unknown tensor in'} {TENSORS_FILE}")
    for k, dt in _DTYPES.items():
        if _get(spec, f"tensors.{k}.dtype") != dt:
            _fail(f"tensors.{k}.dtype", f"expected {dt!r}, got {_short(spec['tensors'][k]['dtype'])}")
        if str(t[k].dtype) != dt:
            _fail(f"tensors.{k}.dtype", f"{TENSORS_FILE} holds {t[k].dtype}, expected {dt}")
        if _get(spec, f"tensors.{k}.shape") != list(t[k].shape):
            _fail(f"tensors.{k}.shape", f"spec says {_short(spec['tensors'][k]['shape'])}, "
                  f"file holds {list(t[k].shape)}")
    narrow = _get(spec, "narrow_range")
    for k in WEIGHTS:
        if not isinstance(narrow[k], bool):
            _fail(f"narrow_range.{k}", f"expected true or false, got {_short(narrow[k])}")
    a = Artifact(
        W=t["W"], U=t["U"], V=t["V"], b=t["b"], c=t["c"],
        activation=_get(spec, "model.activation"), output_mode=_get(spec, "model.output_mode"),
        recurrent_bits=_get(spec, "bits.W"), input_weight_bits=_get(spec, "bits.U"),
        output_bits=_get(spec, "bits.V"), input_bits=_get(spec, "bits.x"), act_bits=_get(spec, "bits.h"),
        m_w=_get(spec, "requant.m_w"), shift_w=_get(spec, "requant.shift_w"),
        m_u=_get(spec, "requant.m_u"), shift_u=_get(spec, "requant.shift_u"),
        input_scale=_get(spec, "scales.input"), w_scale=_get(spec, "scales.W"), u_scale=_get(spec, "scales.U"),
        hidden_scale=_get(spec, "scales.hidden"), v_scale=_get(spec, "scales.V"),
        narrow=tuple(k for k in WEIGHTS if narrow[k]), scale_mode=_get(spec, "scales.mode"),
        provenance=spec["provenance"],
    )
    for key, value in (("model.input_size", a.input_size), ("model.hidden_size", a.hidden_size),
                       ("model.output_size", a.output_size)):
        if type(_get(spec, key)) is not int or _get(spec, key) != value:
            _fail(key, f"spec says {_short(_get(spec, key))}, tensors say {value}")
    if _get(spec, "requant.rounding") != "half_up":
        _fail("requant.rounding", "only 'half_up' is defined")
    if _get(spec, "requant.saturation") != "clamp":
        _fail("requant.saturation", "only 'clamp' is defined")
    a.validate()
    derived = a.spec_dict()
    for sec in ("scales", "ranges", "widths"):
        for k, v in derived[sec].items():
            if spec[sec][k] != v or type(spec[sec][k]) is not type(v):
                _fail(f"{sec}.{k}", f"stored {_short(spec[sec][k])} disagrees with the derived {_short(v)}")
    if _get(spec, "content_sha256") != derived["content_sha256"]:
        _fail("content_sha256", "does not match the artifact's content (a field or tensor was edited after export)")
    return a
