"""ONNX export of the integer recurrence, run by onnxruntime bit-exactly against the simulator.

The graph implements docs/spec.md with standard ONNX ops only (default domain, opset 21, IR
version 10 -- onnx 1.23 would write IR 14, which onnxruntime 1.31 refuses):

    pu   = [x, 1] · [M_U·Uᵀ; 2^(S-1)]       all time steps at once, before the loop (time-major)
    Scan over time, state h (B, n), h_0 = 0:
        p = h · (M_W·W)ᵀ + pu_t
        z = floor(p / 2^S)
        h = sign(z) · clip(|z| + b, 0, h_max)   (modReLU)   |   clip(z, 0, h_max)   (ReLU)
    y    = H · Vᵀ + c   (every_step)   |   h_T · Vᵀ + c   (last_step)

The recurrence is one ``Scan`` node, not unrolled, so one file serves every batch size and
sequence length (both dimensions are symbolic).

Arithmetic type, chosen per artifact exactly as the simulator chooses it:

* **float64** when ``Artifact.float64_exact()`` proves every intermediate (each partial dot
  product, ``p``, ``z``, ``|z| + b``, ``y``) is an integer below 2^53 in magnitude. Then every
  float64 add/multiply of these integers is exact whatever the summation order or FMA use.
  The factor 2^-S is folded into the weights as well: a power-of-two scaling only moves the
  exponent, so every partial sum is ``k · 2^-S`` with ``|k| < 2^53``, still exact, ``p`` arrives as
  exactly ``p / 2^S`` and ``Floor`` gives the spec's rounding. This is the fast path:
  onnxruntime's double ``MatMul`` uses its GEMM kernel, its int64 ``MatMul`` does not.
* **int64** otherwise (the artifact loader guarantees every bound is below 2^62, so nothing
  wraps). onnxruntime's integer ``Div`` truncates toward zero and ``BitShift`` is unsigned
  only, so the floor is built as ``(p - Mod(p, 2^S)) / 2^S``: ``Mod`` with ``fmod=0`` takes the
  divisor's sign, so the remainder lies in [0, 2^S) and the division is exact.

The scan runs time-major (T, B, ·) so each step's slice is contiguous; only the small input
(m columns) and the outputs are transposed. Folding ``M_W`` into W, ``M_U`` into U and the
rounding offset into the input product (a constant-1 input column) is exact in both types: every
partial sum is bounded by the spec's ``pre`` bound.

The model's ``metadata_props`` carry the artifact's ``content_hash`` and a
SHA-256 of the serialized graph, so :func:`check_onnx_matches` can tell a file built from another
artifact, or edited by hand, from the real one.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from qornn.errors import QornnError

from .artifact import Artifact

OPSET = 21
IR_VERSION = 10
ONNX_FORMAT = "qornn-onnx-v2"
ONNX_FILE = "model.onnx"
META = "qornn."  # metadata key prefix

# Pinned graph-optimization level; see docs/spec.md "## ONNX" for why.
ORT_OPTIMIZATION = "disable_all"


def _np_dtype(exact: bool):
    return np.float64 if exact else np.int64


def build_onnx(art: Artifact, real_input: bool = False, force_int64: bool = False):
    """The ONNX model of `art`'s integer recurrence.

    Input ``x_codes`` int64 (batch, time, m), or with ``real_input=True`` an input ``x`` float64
    of real values quantized in the graph as the spec says (``clip(floor(x / s_x + 1/2))`` in
    float64; NaN/inf give undefined codes -- check them before). Outputs ``y_codes`` int64
    ((B, T, o) every_step, (B, o) last_step) and ``h_codes`` int64 (B, T, n).
    ``force_int64`` builds the int64 graph even where float64 is exact (tests, benchmarks).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    art.validate()
    exact = art.float64_exact() and not force_int64
    dt = _np_dtype(exact)
    T_ = TensorProto.DOUBLE if exact else TensorProto.INT64
    n, m, o = art.hidden_size, art.input_size, art.output_size
    S = art.shift
    half = (1 << S) >> 1
    nodes, inits = [], []

    def const(name, value, dtype=dt):
        inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def node(op, ins, outs, **attrs):
        nodes.append(helper.make_node(op, ins, outs, name=f"{op}_{len(nodes)}", **attrs))
        return outs[0] if len(outs) == 1 else outs

    # --- inputs to codes in the working type, then time-major (T, B, m) --------------------
    # (Cast before Transpose: onnxruntime 1.31 at ORT_ENABLE_ALL segfaults while optimizing a
    # Transpose(int64) -> Cast(double) -> MatMul chain.)
    if real_input:
        x_in = helper.make_tensor_value_info("x", TensorProto.DOUBLE, ["batch", "time", m])
        q = node("Div", ["x", const("s_x", art.input_scale, np.float64)], ["x_scaled"])
        q = node("Add", [q, const("one_half", 0.5, np.float64)], ["x_plus_half"])
        q = node("Floor", [q], ["x_floor"])
        x = node("Clip", [q, const("x_lo", -art.x_max, np.float64), const("x_hi", art.x_max, np.float64)], ["x_q"])
        x = x if exact else node("Cast", [x], ["x_work"], to=T_)
        shape_src = "x"
    else:
        x_in = helper.make_tensor_value_info("x_codes", TensorProto.INT64, ["batch", "time", m])
        x = node("Cast", ["x_codes"], ["x_work"], to=T_) if exact else "x_codes"
        shape_src = "x_codes"
    x = node("Transpose", [x], ["x_tm"], perm=[1, 0, 2])

    # --- input term of every step at once: (T, B, n) ---------------------------------------
    # float64: M_U and 2^-S folded into U (exact, see the module docstring); int64: M_U only.
    # The rounding offset 2^(S-1) rides in the same product as the weight of a constant-1 input
    # column (Pad), which saves a full (T, B, n) Add.
    scale = 2.0 ** -S if exact else 1
    Uk = art.mult_u * art.U.astype(np.int64).T
    Wk = art.mult_w * art.W.astype(np.int64).T
    if half:
        x = node("Pad", [x, const("pad_one", [0, 0, 0, 0, 0, 1], np.int64), const("one", 1)], ["x_one"],
                 mode="constant")
        Uk = np.concatenate([Uk, np.full((1, n), half, dtype=np.int64)])
    pu = node("MatMul", [x, const("Uk", Uk * scale if exact else Uk)], ["pu"])

    # --- h_0 = zeros (batch, n) ------------------------------------------------------------
    shp = node("Shape", [shape_src], ["x_shape"], start=0, end=1)
    shp = node("Concat", [shp, const("n_dim", [n], np.int64)], ["h0_shape"], axis=0)
    h0 = node("ConstantOfShape", [shp], ["h0"],
              value=numpy_helper.from_array(np.zeros(1, dtype=dt), "zero"))

    # --- the Scan body: one time step ------------------------------------------------------
    body_nodes, body_inits = [], []

    def bconst(name, value, dtype=dt):
        body_inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def bnode(op, ins, outs, **attrs):
        body_nodes.append(helper.make_node(op, ins, outs, name=f"step_{op}_{len(body_nodes)}", **attrs))
        return outs[0]

    p = bnode("MatMul", ["h_prev", bconst("Wk", Wk * scale if exact else Wk)], ["aw"])
    p = bnode("Add", [p, "pu_t"], ["p"])
    if exact:
        z = bnode("Floor", [p], ["z"]) if S else p   # p is already p / 2^S
    elif S:
        two_s = bconst("two_S", 1 << S)
        r = bnode("Mod", [p, two_s], ["p_mod"], fmod=0)
        z = bnode("Sub", [p, r], ["p_floor"])
        z = bnode("Div", [z, two_s], ["z"])
    else:
        z = p
    lo, hi = bconst("zero_c", 0), bconst("h_max", art.h_max)
    if art.activation == "modrelu":
        a = bnode("Abs", [z], ["z_abs"])
        a = bnode("Add", [a, bconst("b", art.b.astype(np.int64))], ["z_abs_b"])
        a = bnode("Clip", [a, lo, hi], ["mag"])
        s = bnode("Sign", [z], ["z_sign"])
        bnode("Mul", [s, a], ["h_next"])
    else:
        bnode("Clip", [z, lo, hi], ["h_next"])
    bnode("Identity", ["h_next"], ["h_out"])
    vi = lambda name: helper.make_tensor_value_info(name, T_, ["batch", n])  # noqa: E731
    body = helper.make_graph(body_nodes, "qornn_step", [vi("h_prev"), vi("pu_t")],
                             [vi("h_next"), vi("h_out")], initializer=body_inits)
    node("Scan", [h0, pu], ["h_last", "H_tm"], body=body, num_scan_inputs=1)

    # --- outputs -----------------------------------------------------------------------------
    every = art.output_mode == "every_step"
    y = node("MatMul", ["H_tm" if every else "h_last", const("V_T", art.V.astype(np.int64).T)], ["y_mm"])
    y = node("Add", [y, const("c", art.c.astype(np.int64))], ["y_work"])
    h = "H_tm"
    if exact:
        y = node("Cast", [y], ["y_int"], to=TensorProto.INT64)
        h = node("Cast", [h], ["H_int"], to=TensorProto.INT64)
    if every:
        node("Transpose", [y], ["y_codes"], perm=[1, 0, 2])
    else:
        node("Identity", [y], ["y_codes"])
    node("Transpose", [h], ["h_codes"], perm=[1, 0, 2])
    y_shape = ["batch", "time", o] if every else ["batch", o]
    graph = helper.make_graph(
        nodes, "qornn", [x_in],
        [helper.make_tensor_value_info("y_codes", TensorProto.INT64, y_shape),
         helper.make_tensor_value_info("h_codes", TensorProto.INT64, ["batch", "time", n])],
        initializer=inits,
        doc_string="qornn integer recurrence (docs/spec.md); outputs are integer codes: "
                   f"y = y_codes * {art.output_scale!r}, h = h_codes * {art.hidden_scale!r}")
    from qornn import __version__
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="qornn", producer_version=__version__)
    model.ir_version = IR_VERSION
    meta = {
        "format": ONNX_FORMAT,
        "content_hash": art.content_hash(),
        "graph_sha256": _graph_hash(model),
        "arithmetic": "float64" if exact else "int64",
        "input": "real" if real_input else "codes",
        "x_max": str(art.x_max),
        "input_scale": repr(art.input_scale),
        "hidden_scale": repr(art.hidden_scale),
        "output_scale": repr(art.output_scale),
        "output_mode": art.output_mode,
    }
    helper.set_model_props(model, {META + k: v for k, v in meta.items()})
    onnx.checker.check_model(model, full_check=True)
    return model


def onnx_bytes(art: Artifact, real_input: bool = False, force_int64: bool = False) -> bytes:
    """Serialized :func:`build_onnx`; what ``qornn export`` writes as ``model.onnx``."""
    return build_onnx(art, real_input=real_input, force_int64=force_int64).SerializeToString()


def _graph_hash(model) -> str:
    return hashlib.sha256(model.graph.SerializeToString()).hexdigest()


def _read(path_or_bytes):
    """(name for messages, ModelProto); any read failure is a one-line QornnError."""
    import onnx
    from google.protobuf.message import DecodeError

    if isinstance(path_or_bytes, (bytes, bytearray)):
        name, data = "ONNX model", bytes(path_or_bytes)
    else:
        name = str(path_or_bytes)
        try:
            data = Path(path_or_bytes).read_bytes()
        except OSError as e:
            raise QornnError(f"{name}: cannot read ONNX file ({e.strerror or e})") from None
    try:
        model = onnx.load_model_from_string(data)
    except (DecodeError, ValueError, RuntimeError) as e:
        raise QornnError(f"{name}: not a readable ONNX model ({type(e).__name__})") from None
    if not model.graph.node:
        raise QornnError(f"{name}: not a readable ONNX model (empty graph)")
    return name, model


def check_onnx_matches(art: Artifact, path_or_bytes, real_input: bool = False):
    """Raise a one-line QornnError unless the ONNX file is the export of `art`, unedited.

    Checks the qornn metadata (format, content hash), the graph hash written at
    export (detects hand edits of initializers or nodes), the ONNX checker, and the graph's
    inputs (``x_codes``, or ``x`` for a ``real_input`` model) and outputs. Returns the ModelProto."""
    import onnx
    from onnx import TensorProto

    name, model = _read(path_or_bytes)
    meta = {p.key[len(META):]: p.value for p in model.metadata_props if p.key.startswith(META)}
    if meta.get("format") != ONNX_FORMAT:
        raise QornnError(f"{name}: not a qornn ONNX export (metadata {META}format is {meta.get('format')!r}, "
                         f"expected {ONNX_FORMAT!r})")
    if meta.get("content_hash") != art.content_hash():
        raise QornnError(f"{name} was built from a different artifact (content hash differs); "
                         "re-run `qornn export`")
    if meta.get("graph_sha256") != _graph_hash(model):
        raise QornnError(f"{name}: graph does not match its recorded hash (edited after export)")
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise QornnError(f"{name}: invalid ONNX model ({str(e).splitlines()[0]})") from None

    def sig(vi):
        t = vi.type.tensor_type
        return vi.name, t.elem_type, [d.dim_value if d.HasField("dim_value") else d.dim_param for d in t.shape.dim]

    n, m, o = art.hidden_size, art.input_size, art.output_size
    in_ok = (("x", TensorProto.DOUBLE, ["batch", "time", m]) if real_input
             else ("x_codes", TensorProto.INT64, ["batch", "time", m]))
    y_shape = ["batch", "time", o] if art.output_mode == "every_step" else ["batch", o]
    out_ok = [("y_codes", TensorProto.INT64, y_shape), ("h_codes", TensorProto.INT64, ["batch", "time", n])]
    ins, outs = [sig(v) for v in model.graph.input], [sig(v) for v in model.graph.output]
    if len(ins) != 1 or ins[0] != in_ok:
        want = f"x float64 (batch, time, {m})" if real_input else f"x_codes int64 (batch, time, {m})"
        raise QornnError(f"{name}: graph inputs {ins} do not match the artifact (expected {want})")
    if outs != out_ok:
        raise QornnError(f"{name}: graph outputs {outs} do not match the artifact (expected {out_ok})")
    return model


def make_session(path_or_bytes, optimization: str = ORT_OPTIMIZATION, threads: int = 0):
    """An onnxruntime CPU session with the pinned graph-optimization level (see docs/spec.md)."""
    import onnxruntime as ort

    levels = {"disable_all": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
              "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
    so = ort.SessionOptions()
    so.graph_optimization_level = levels[optimization]
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    # No busy-waiting worker threads after a run: they would compete for the cores with the
    # simulator's BLAS running in the same process (qornn verify runs both).
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if isinstance(path_or_bytes, (str, Path)):
        name, data = str(path_or_bytes), _read(path_or_bytes)[1].SerializeToString()
    else:
        name, data = "ONNX model", bytes(path_or_bytes)
    try:
        return ort.InferenceSession(data, sess_options=so, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types
        raise QornnError(f"{name}: onnxruntime cannot load it ({str(e).splitlines()[0]})") from None


def run_onnx(model, x) -> tuple[np.ndarray, np.ndarray]:
    """Run a qornn ONNX model (path, bytes or a session from :func:`make_session`) on CPU.

    `x` is (batch, time, m): integer codes for the default model, real values for a
    ``real_input`` model. Returns (y_codes, h_codes), both int64."""
    sess = model if hasattr(model, "run") and hasattr(model, "get_inputs") else make_session(model)
    inp = sess.get_inputs()[0]
    meta = sess.get_modelmeta().custom_metadata_map
    x = np.asarray(x)
    if inp.name == "x_codes":
        if not np.issubdtype(x.dtype, np.integer):
            raise QornnError(f"this ONNX model takes integer input codes, got {x.dtype}")
        xm = int(meta.get(META + "x_max", 2**62))
        if x.size and (x.min() < -xm or x.max() > xm):
            raise QornnError(f"integer input codes must lie in [-{xm}, {xm}], got {int(x.min())}..{int(x.max())}")
        x = np.ascontiguousarray(x, dtype=np.int64)
    else:
        if not np.issubdtype(x.dtype, np.floating):
            raise QornnError(f"this ONNX model takes real (float) inputs, got {x.dtype}")
        x = np.ascontiguousarray(x, dtype=np.float64)
    if x.ndim != 3:
        raise QornnError(f"input must have shape (batch, time, features), got {x.shape}")
    try:
        y, h = sess.run(["y_codes", "h_codes"], {inp.name: x})
    except Exception as e:
        raise QornnError(f"onnxruntime failed: {str(e).splitlines()[0]}") from None
    return y, h
