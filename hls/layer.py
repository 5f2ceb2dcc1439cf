"""The QORNN recurrent layer for hls4ml, registered through hls4ml's Extension API.

What is registered (once per process, by `register()`):

* ``QORNN`` -- an hls4ml IR layer (``hls4ml.model.layers.register_layer``). Its inputs are the
  input codes, shape (max_len, m), and the sequence length, shape (1,); its output is
  (max_len, o) for every_step or (o,) for last_step. Its weights are the artifact's W, U, V, b, c
  as integer weight variables; its types are ap_int/ap_uint of the widths the artifact derives.
* a config template and a function-call template for the Vivado and Vitis backends
  (``backend.register_template``), which emit the three ``nnet::dense`` configurations
  (latency or resource strategy, reuse factor) and the call of ``nnet::qornn``;
* the C++ implementation ``templates/nnet_qornn.h`` (``backend.register_source``).

No optimizer pass is needed: the layer carries explicit integer types (nothing for
``infer_precision_types`` to do), lays out its weights for the chosen strategy itself (the
resource kernels read the (n_out, n_in) layout, the latency kernel its transpose), and hls4ml's
own ``transform_types`` pass turns its types and variables into backend types.

hls4ml is imported here, never torch (``import hls4ml`` does not import torch; the PyTorch
converter is never touched: the graph is built from a layer list, see project.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

HEADER = Path(__file__).parent / "templates" / "nnet_qornn.h"
BACKENDS = ("Vivado", "Vitis")
LAYER_CLASS = "QORNN"

_registered = False


def int_type(bits: int, signed: bool = True):
    from hls4ml.model.types import IntegerPrecisionType

    return IntegerPrecisionType(width=int(bits), signed=signed)


def weight_bits(bits: int) -> int:
    """Two's-complement width of k-bit weight codes; 1-bit codes {-1, +1} need 2 bits."""
    return max(int(bits), 2)


def _make_layer_class():
    from hls4ml.model.attributes import Attribute, ChoiceAttribute, TypeAttribute, WeightAttribute
    from hls4ml.model.layers import Layer
    from hls4ml.model.types import NamedType

    class QORNN(Layer):
        """Quantized orthogonal RNN: the whole integer recurrence of one artifact (docs/spec.md)."""

        _expected_attributes = [
            Attribute("n_in"),
            Attribute("n_hidden"),
            Attribute("n_out"),
            Attribute("max_len"),
            ChoiceAttribute("activation", ["modrelu", "relu"], configurable=False),
            ChoiceAttribute("output_mode", ["every_step", "last_step"], configurable=False),
            ChoiceAttribute("qornn_strategy", ["latency", "resource"], configurable=False),
            ChoiceAttribute("qornn_io", ["io_parallel", "io_stream"], configurable=False),
            Attribute("m_w"),
            Attribute("m_u"),
            Attribute("shift"),
            Attribute("h_max"),
            WeightAttribute("w_rec"),
            WeightAttribute("w_in"),
            WeightAttribute("w_out"),
            WeightAttribute("act_bias"),
            WeightAttribute("out_bias"),
            TypeAttribute("w_rec"),
            TypeAttribute("w_in"),
            TypeAttribute("w_out"),
            TypeAttribute("act_bias"),
            TypeAttribute("out_bias"),
            TypeAttribute("hidden"),
            TypeAttribute("accw"),
            TypeAttribute("accu"),
            TypeAttribute("pre"),
            TypeAttribute("z"),
            TypeAttribute("zb"),
            TypeAttribute("zero"),
            TypeAttribute("out"),
        ]

        def initialize(self):
            n, m, o = self.attributes["n_hidden"], self.attributes["n_in"], self.attributes["n_out"]
            T = self.attributes["max_len"]
            wd = self.attributes["widths"]
            shapes = {"W": (n, n), "U": (n, m), "V": (o, n), "b": (n,), "c": (o,)}
            for key, shape in shapes.items():
                if np.shape(self.attributes[key]) != shape:
                    raise ValueError(f"QORNN layer {self.name}: {key} has shape {np.shape(self.attributes[key])}, "
                                     f"expected {shape}")
            stream = self.attributes["qornn_io"] == "io_stream"
            # io_stream: one call per time step, one output beat (every step, or after a `last` beat)
            shape = [T, o] if self.attributes["output_mode"] == "every_step" and not stream else [o]
            self.add_output_variable(shape, precision=int_type(wd["out"]))

            # Weight layouts: nnet::dense_latency reads weights[i_in * n_out + j_out] (the transpose
            # of our (n_out, n_in) matrices); the resource kernels read weights[j_out * n_in + i_in].
            resource = self.attributes["qornn_strategy"] == "resource"

            def layout(mat):
                mat = np.asarray(mat, dtype=np.int64)
                return np.ascontiguousarray(mat if resource else mat.T)

            kw, ku = self.attributes["recurrent_bits"], self.attributes["input_weight_bits"]
            ko = self.attributes["output_bits"]
            specs = [
                ("w_rec", "qw{index}", layout(self.attributes["W"]), int_type(weight_bits(kw))),
                ("w_in", "qu{index}", layout(self.attributes["U"]), int_type(weight_bits(ku))),
                ("w_out", "qv{index}", layout(self.attributes["V"]), int_type(weight_bits(ko))),
                ("act_bias", "qb{index}", np.asarray(self.attributes["b"], dtype=np.int64), int_type(wd["b"])),
                ("out_bias", "qc{index}", np.asarray(self.attributes["c"], dtype=np.int64), int_type(wd["c"])),
            ]
            for name, var_name, data, precision in specs:
                self.add_weights_variable(name=name, var_name=var_name, precision=precision, data=data)
                # hls4ml formats integer weights with '{:.0f}', which goes through float64 and
                # loses digits past 2^53 (c is int64); print them as exact decimal integers.
                self.weights[name].precision_fmt = "{:d}"

            def named(attr, precision):
                self.set_attr(attr + "_t", NamedType(f"layer{self.index}_{attr}_t", precision))

            named("hidden", int_type(self.attributes["act_bits"]))
            named("accw", int_type(wd["acc_w"]))
            named("accu", int_type(wd["acc_u"]))
            named("pre", int_type(wd["pre"]))
            named("z", int_type(wd["z"]))
            named("zb", int_type(max(wd["zb"], wd["z"])))
            named("zero", int_type(1, signed=False))
            named("out", int_type(wd["out"]))  # accumulator of V.h + c (same width as the output)

    return QORNN


# -- C++ templates ---------------------------------------------------------------------------

_mult_template = """struct config{index}_{tag} : nnet::dense_config {{
    static const unsigned n_in = {n_in};
    static const unsigned n_out = {n_out};
    static const unsigned io_type = nnet::io_parallel;
    static const unsigned strategy = nnet::{strategy};
    static const unsigned reuse_factor = {reuse};
    static const unsigned n_zeros = {nzeros};
    static const unsigned n_nonzeros = {nonzeros};
    static const unsigned multiplier_limit = DIV_ROUNDUP(n_in * n_out, reuse_factor) - n_zeros / reuse_factor;
    static const bool store_weights_in_bram = false;
    typedef {accum_t} accum_t;
    typedef {bias_t} bias_t;
    typedef {weight_t} weight_t;
    typedef {native_t} native_accum_t;
    typedef ap_uint<1> index_t;
    template<class data_T, class res_T, class CONFIG_T>
    using kernel = {dense_function}<data_T, res_T, CONFIG_T>;
    template<class x_T, class y_T>
    using product = nnet::product::mult<x_T, y_T>;
}};
"""

_config_template = """struct config{index} : nnet::qornn_config {{
    static const unsigned n_in = {n_in};
    static const unsigned n_hidden = {n_hidden};
    static const unsigned n_out = {n_out};
    static const unsigned max_len = {max_len};
    static const bool modrelu = {modrelu};
    static const bool every_step = {every_step};
    static const unsigned shift = {shift};
    static const long long m_w = {m_w}LL;
    static const long long m_u = {m_u}LL;
    static const long long half = {half}LL;
    static const int h_max = {h_max};
    typedef {hidden_t.name} h_t;
    typedef {accw_t.name} accw_t;
    typedef {accu_t.name} accu_t;
    typedef {pre_t.name} pre_t;
    typedef {z_t.name} z_t;
    typedef {zb_t.name} zb_t;
    typedef {act_bias_t.name} act_bias_t;
    typedef config{index}_w mult_w;
    typedef config{index}_u mult_u;
    typedef config{index}_v mult_v;
}};
"""

_function_template = (
    "nnet::qornn<{input_t}, {input2_t}, {output_t}, {config}>"
    "({input}, {input2}, {output}, {w}, {u}, {v}, {b}, {c});"
)
_stream_function_template = (
    "nnet::qornn<{input_t}, {output_t}, {config}>"
    "({input}, {output}, {w}, {u}, {v}, {b}, {c});"
)

_include_list = ["nnet_utils/nnet_dense.h", "nnet_utils/nnet_qornn.h"]


def native_accum_type(width: int) -> str:
    """The C++ integer that holds every partial sum of an accumulator of `width` bits (its spec
    bound is below 2^(width-1)); widths stop at 63 (every bound is below 2^62)."""
    if not 1 <= width <= 64:
        raise ValueError(f"accumulator width {width} is outside 1..64")
    return "int" if width <= 32 else "long long"


def _dense_function(strategy: str, reuse: int, n_in: int) -> str:
    if strategy == "latency":
        return "nnet::DenseLatencyNative"   # nnet_qornn.h: hls4ml's dense_latency with native sums
    # hls4ml's rule (its Dense config template): rf <= n_in, or rf a multiple of n_in.
    return "nnet::DenseResource_rf_leq_nin" if reuse <= n_in else "nnet::DenseResource_rf_gt_nin_rem0"


def _make_templates(QORNN):
    from hls4ml.backends.template import FunctionCallTemplate, LayerConfigTemplate

    class QORNNConfigTemplate(LayerConfigTemplate):
        def __init__(self):
            super().__init__(QORNN)
            self.template = _config_template

        def format(self, node):
            params = self._default_config_params(node)
            reuse = int(params["reuse"])
            strategy = node.get_attr("qornn_strategy")
            n, m, o = node.get_attr("n_hidden"), node.get_attr("n_in"), node.get_attr("n_out")
            mults = []
            for tag, n_in, n_out, wname, acc, bias in (
                ("w", n, n, "w_rec", "accw_t", "zero_t"),
                ("u", m, n, "w_in", "accu_t", "zero_t"),
                ("v", n, o, "w_out", "out_t", "out_bias_t"),
            ):
                w = node.get_weights(wname)
                mults.append(_mult_template.format(
                    index=node.index, tag=tag, n_in=n_in, n_out=n_out, strategy=strategy, reuse=reuse,
                    nzeros=w.nzeros, nonzeros=w.nonzeros, accum_t=node.get_attr(acc).name,
                    bias_t=node.get_attr(bias).name, weight_t=w.type.name,
                    native_t=native_accum_type(node.get_attr(acc).precision.width),
                    dense_function=_dense_function(strategy, reuse, n_in)))
            shift = int(node.get_attr("shift"))
            params.update(
                modrelu="true" if node.get_attr("activation") == "modrelu" else "false",
                every_step="true" if node.get_attr("output_mode") == "every_step" else "false",
                half=(1 << shift) >> 1,
            )
            return "\n".join(mults) + "\n" + self.template.format(**params)

    class QORNNFunctionTemplate(FunctionCallTemplate):
        def __init__(self):
            super().__init__(QORNN, include_header=_include_list)
            self.template = _function_template

        def format(self, node):
            params = self._default_function_params(node)
            params.update(w=node.get_weights("w_rec").name, u=node.get_weights("w_in").name,
                          v=node.get_weights("w_out").name, b=node.get_weights("act_bias").name,
                          c=node.get_weights("out_bias").name)
            if node.get_attr("qornn_io") == "io_stream":
                return _stream_function_template.format(**params)
            second = node.get_input_variable(node.inputs[1])
            params["input2_t"] = second.type.name
            params["input2"] = second.name
            return self.template.format(**params)

    return QORNNConfigTemplate, QORNNFunctionTemplate


def register() -> None:
    """Register the layer, its templates and its header with hls4ml (idempotent)."""
    global _registered
    if _registered:
        return
    import hls4ml
    from hls4ml.model.layers import register_layer

    QORNN = _make_layer_class()
    register_layer(LAYER_CLASS, QORNN)
    config_t, function_t = _make_templates(QORNN)
    for name in BACKENDS:
        backend = hls4ml.backends.get_backend(name)
        backend.register_template(config_t)
        backend.register_template(function_t)
        backend.register_source(HEADER)
    _registered = True
