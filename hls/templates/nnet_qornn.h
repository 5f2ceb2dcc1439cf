// nnet_qornn.h -- the QORNN recurrent core for hls4ml (Vivado / Vitis backends).
//
// Implements the integer recurrence of the qornn artifact (docs/spec.md, schema version 2):
//
//   aW_t = W . h_{t-1}                    nnet::dense, exact (accum_t = accw_t holds every sum)
//   aU_t = U . x_t                        nnet::dense, exact (accum_t = accu_t)
//   p_t  = M_W . aW_t + M_U . aU_t + 2^(S-1)          exact in pre_t
//   z_t  = p_t >> S                       arithmetic shift = floor; with the offset: round half up
//   modReLU: h_t = sign(z_t) . clamp(|z_t| + b, 0, h_max)     (sign(0) = 0)
//   ReLU:    h_t = clamp(z_t, 0, h_max)
//   y_t  = V . h_t + c                    nnet::dense with c as its bias, exact (accum_t = out_t)
//
// Every stored value is an ap_int / ap_uint whose width the artifact derives from the bit widths
// and sizes (artifact `widths`), so no sum, product or shift can wrap: the only rounding is the
// shift, the only saturation the activation's clamp.  The whole time loop runs here, with the
// hidden state held inside the core.
//
// Native integers inside, spec widths at the edges.  The products and sums of the Latency dense
// kernel (DenseLatencyNative) and of the requantization run in C++ `int` / `long long` and each
// result is assigned to its spec-width ap_int (accw_t, accu_t, out_t, pre_t, z_t, zb_t, h_t).
// This is exact: every intermediate is bounded by its spec bound (docs/spec.md, 'Widths'), and
// the native type is chosen to hold that bound (`int` while the accumulator's width is <= 32 bits,
// else `long long`; every bound is below 2^62, the artifact refuses the rest).  In hardware it is
// the same datapath: the low k bits of a sum or product depend only on the low k bits of its
// operands, so the bits above each spec width feed nothing and synthesis removes them.  In the
// C-simulation it is the difference between ~10 ns per multiply-accumulate through ap_private
// and native SIMD integer code (docs/benchmarks.md, 'Verification throughput').
//
// io_parallel: the I/O shape is fixed at compile time (CONFIG_T::max_len steps); the second input
// carries the number of valid steps; steps at or beyond it are ignored and (every_step) their
// output slots written as zeros; h_0 = 0 at the start of every call.  io_stream: one call per
// time step with a start/last flag in the beat and the state kept between calls (no maximum).
//
// C++11 only (Vivado/Vitis HLS compile the firmware with -std=c++0x).

#ifndef NNET_QORNN_H_
#define NNET_QORNN_H_

#include "hls_stream.h"
#include "nnet_common.h"
#include "nnet_dense.h"
#include "nnet_types.h"

namespace nnet {

struct qornn_config {
    // Sizes: m inputs, n hidden units, o outputs, compile-time maximum sequence length.
    static const unsigned n_in = 1;
    static const unsigned n_hidden = 1;
    static const unsigned n_out = 1;
    static const unsigned max_len = 1;

    // Model: modReLU (true) or ReLU (false); every_step (true) or last_step (false) output.
    static const bool modrelu = true;
    static const bool every_step = true;

    // Requantization: z = (m_w * aW + m_u * aU + half) >> shift, half = 2^(shift-1) (0 for shift 0).
    static const unsigned shift = 0;
    static const long long m_w = 1;
    static const long long m_u = 1;
    static const long long half = 0;
    static const int h_max = 1; // < 2^15: compared as int (a 64-bit constant would force 65-bit ap_int compares)

    // Types (all integer): hidden state, accumulators, requant constants and intermediates.
    typedef ap_int<2> h_t;
    typedef ap_int<8> accw_t;
    typedef ap_int<8> accu_t;
    typedef ap_int<16> pre_t;
    typedef ap_int<8> z_t;
    typedef ap_int<8> zb_t;
    typedef ap_int<2> act_bias_t;

    // nnet::dense configurations of the three matrix products.
    typedef dense_config mult_w; // W . h  (n_in = n_out = n_hidden)
    typedef dense_config mult_u; // U . x  (n_in = n_in, n_out = n_hidden)
    typedef dense_config mult_v; // V . h + c  (n_in = n_hidden, n_out = n_out)
};

// A gcc / clang / Vitis HLS (clang) right shift of a negative signed integer is arithmetic
// (implementation-defined before C++20); the requantization's floor relies on it.
static_assert((-5LL >> 1) == -3LL, "qornn needs an arithmetic right shift of signed integers");

// The Latency dense product y = W x + b with native-integer sums (see the header): the same
// fully parallel, pipelined product as hls4ml's dense_latency (II = reuse_factor, multiplier
// budget multiplier_limit), one sum per output.  CONFIG_T::native_accum_t holds the accumulator's
// bound, so every partial sum and product is exact; the result is assigned to res_T (spec width).
template <class data_T, class res_T, typename CONFIG_T>
void dense_latency_native(data_T data[CONFIG_T::n_in], res_T res[CONFIG_T::n_out],
                          typename CONFIG_T::weight_t weights[CONFIG_T::n_in * CONFIG_T::n_out],
                          typename CONFIG_T::bias_t biases[CONFIG_T::n_out]) {
    typedef typename CONFIG_T::native_accum_t acc_t;
    acc_t acc[CONFIG_T::n_out];

    #pragma HLS function_instantiate variable=weights,biases
    #pragma HLS PIPELINE II=CONFIG_T::reuse_factor
    #pragma HLS ARRAY_PARTITION variable=biases complete
    #pragma HLS ARRAY_PARTITION variable=acc complete
    #pragma HLS ALLOCATION operation instances=mul limit=CONFIG_T::multiplier_limit

ResetAccum:
    for (unsigned j = 0; j < CONFIG_T::n_out; j++) {
        acc[j] = (acc_t)biases[j];
    }
// weights[i * n_out + j] (hls4ml's Latency layout): the inner loop runs over contiguous weights.
Product1:
    for (unsigned i = 0; i < CONFIG_T::n_in; i++) {
        const acc_t x = (acc_t)data[i];
    Product2:
        for (unsigned j = 0; j < CONFIG_T::n_out; j++) {
            acc[j] += x * (acc_t)weights[i * CONFIG_T::n_out + j];
        }
    }
Result:
    for (unsigned j = 0; j < CONFIG_T::n_out; j++) {
        res[j] = acc[j];
    }
}

template <class data_T, class res_T, typename CONFIG_T>
class DenseLatencyNative : public DenseKernel<data_T, res_T, CONFIG_T> {
  public:
    static void dense(data_T data[CONFIG_T::n_in], res_T res[CONFIG_T::n_out],
                      typename CONFIG_T::weight_t weights[CONFIG_T::n_in * CONFIG_T::n_out],
                      typename CONFIG_T::bias_t biases[CONFIG_T::n_out]) {
        #pragma HLS INLINE
        dense_latency_native<data_T, res_T, CONFIG_T>(data, res, weights, biases);
    }
};

// The requantization and activation of one unit: z = round_half_up(p / 2^S), then modReLU / ReLU.
// The arithmetic runs in long long (every bound < 2^62); p, z and |z| + b are assigned to their
// spec-width types pre_t, z_t and zb_t, which is where their widths come from in hardware.
template <typename CONFIG_T>
typename CONFIG_T::h_t qornn_activate(typename CONFIG_T::accw_t aw, typename CONFIG_T::accu_t au,
                                      typename CONFIG_T::act_bias_t bias) {
    #pragma HLS INLINE
    const typename CONFIG_T::pre_t p = CONFIG_T::m_w * (long long)aw + CONFIG_T::m_u * (long long)au + CONFIG_T::half;
    const typename CONFIG_T::z_t z_spec = (long long)p >> CONFIG_T::shift; // floor division by 2^S
    const long long z = z_spec;
    const long long h_max = CONFIG_T::h_max;
    long long h;
    if (CONFIG_T::modrelu) {
        const typename CONFIG_T::zb_t zb_spec = (z < 0 ? -z : z) + (long long)bias; // spec bound `zb`
        const long long zb = zb_spec;
        const long long a = zb < 0 ? 0 : (zb > h_max ? h_max : zb);
        h = z > 0 ? a : (z < 0 ? -a : 0);
    } else {
        h = z < 0 ? 0 : (z > h_max ? h_max : z);
    }
    return h; // |h| <= h_max: fits h_t
}

// One recurrence step: h <- sigma(requant(W . h + U . x_t)); h is updated in place.
template <class x_T, typename CONFIG_T>
void qornn_step(x_T x_t[CONFIG_T::n_in], typename CONFIG_T::h_t h[CONFIG_T::n_hidden],
                typename CONFIG_T::mult_w::weight_t W[CONFIG_T::n_hidden * CONFIG_T::n_hidden],
                typename CONFIG_T::mult_u::weight_t U[CONFIG_T::n_hidden * CONFIG_T::n_in],
                typename CONFIG_T::act_bias_t b[CONFIG_T::n_hidden]) {
    #pragma HLS INLINE
    typename CONFIG_T::accw_t aw[CONFIG_T::n_hidden];
    typename CONFIG_T::accu_t au[CONFIG_T::n_hidden];
    typename CONFIG_T::mult_w::bias_t zero_w[CONFIG_T::n_hidden];
    typename CONFIG_T::mult_u::bias_t zero_u[CONFIG_T::n_hidden];
    #pragma HLS ARRAY_PARTITION variable=aw complete
    #pragma HLS ARRAY_PARTITION variable=au complete
    #pragma HLS ARRAY_PARTITION variable=zero_w complete
    #pragma HLS ARRAY_PARTITION variable=zero_u complete
ZeroBias:
    for (unsigned i = 0; i < CONFIG_T::n_hidden; i++) {
        #pragma HLS UNROLL
        zero_w[i] = 0;
        zero_u[i] = 0;
    }

    nnet::dense<typename CONFIG_T::h_t, typename CONFIG_T::accw_t, typename CONFIG_T::mult_w>(h, aw, W, zero_w);
    nnet::dense<x_T, typename CONFIG_T::accu_t, typename CONFIG_T::mult_u>(x_t, au, U, zero_u);

Activate:
    for (unsigned i = 0; i < CONFIG_T::n_hidden; i++) {
        #pragma HLS UNROLL
        h[i] = qornn_activate<CONFIG_T>(aw[i], au[i], b[i]);
    }
}

// ---------------------------------------------------------------------------------------------
// io_parallel: x[max_len * n_in] (time-major), len[1], y[max_len * n_out] or y[n_out].
template <class x_T, class len_T, class y_T, typename CONFIG_T>
void qornn(x_T x[CONFIG_T::max_len * CONFIG_T::n_in], len_T len[1],
           y_T y[(CONFIG_T::every_step ? CONFIG_T::max_len : 1) * CONFIG_T::n_out],
           typename CONFIG_T::mult_w::weight_t W[CONFIG_T::n_hidden * CONFIG_T::n_hidden],
           typename CONFIG_T::mult_u::weight_t U[CONFIG_T::n_hidden * CONFIG_T::n_in],
           typename CONFIG_T::mult_v::weight_t V[CONFIG_T::n_out * CONFIG_T::n_hidden],
           typename CONFIG_T::act_bias_t b[CONFIG_T::n_hidden],
           typename CONFIG_T::mult_v::bias_t c[CONFIG_T::n_out]) {
    typename CONFIG_T::h_t h[CONFIG_T::n_hidden];
    x_T x_t[CONFIG_T::n_in];
    y_T y_t[CONFIG_T::n_out];
    #pragma HLS ARRAY_PARTITION variable=h complete
    #pragma HLS ARRAY_PARTITION variable=x_t complete
    #pragma HLS ARRAY_PARTITION variable=y_t complete
    #pragma HLS ARRAY_PARTITION variable=b complete
    #pragma HLS ARRAY_PARTITION variable=c complete

ResetState:
    for (unsigned i = 0; i < CONFIG_T::n_hidden; i++) {
        #pragma HLS UNROLL
        h[i] = 0;
    }
    const unsigned steps = (len[0] > CONFIG_T::max_len) ? CONFIG_T::max_len : (unsigned)len[0];

TimeLoop:
    for (unsigned t = 0; t < CONFIG_T::max_len; t++) {
        if (t < steps) {
        LoadStep:
            for (unsigned j = 0; j < CONFIG_T::n_in; j++) {
                #pragma HLS UNROLL
                x_t[j] = x[t * CONFIG_T::n_in + j];
            }
            qornn_step<x_T, CONFIG_T>(x_t, h, W, U, b);
            if (CONFIG_T::every_step) {
                nnet::dense<typename CONFIG_T::h_t, y_T, typename CONFIG_T::mult_v>(h, y_t, V, c);
            StoreStep:
                for (unsigned j = 0; j < CONFIG_T::n_out; j++) {
                    #pragma HLS UNROLL
                    y[t * CONFIG_T::n_out + j] = y_t[j];
                }
            }
        } else if (CONFIG_T::every_step) {
        PadStep:
            for (unsigned j = 0; j < CONFIG_T::n_out; j++) {
                #pragma HLS UNROLL
                y[t * CONFIG_T::n_out + j] = 0;
            }
        }
    }
    if (!CONFIG_T::every_step) {
        nnet::dense<typename CONFIG_T::h_t, y_T, typename CONFIG_T::mult_v>(h, y_t, V, c);
    StoreLast:
        for (unsigned j = 0; j < CONFIG_T::n_out; j++) {
            #pragma HLS UNROLL
            y[j] = y_t[j];
        }
    }
}

// ---------------------------------------------------------------------------------------------
// io_stream: the stream protocol of docs/hardware.md. One call is one time step: it reads one input
// beat of n_in + 2 codes [x_t (n_in codes), start, last]; a beat with start != 0 resets h to 0
// before its step. It writes one output beat of n_out codes every step (every_step) or after a
// beat with last != 0 (last_step). The hidden state is static: it lives in the core between
// calls, so sequences of any length follow each other back to back, with no maximum length.
template <class x_T, class y_T, typename CONFIG_T>
void qornn(hls::stream<x_T> &x, hls::stream<y_T> &y,
           typename CONFIG_T::mult_w::weight_t W[CONFIG_T::n_hidden * CONFIG_T::n_hidden],
           typename CONFIG_T::mult_u::weight_t U[CONFIG_T::n_hidden * CONFIG_T::n_in],
           typename CONFIG_T::mult_v::weight_t V[CONFIG_T::n_out * CONFIG_T::n_hidden],
           typename CONFIG_T::act_bias_t b[CONFIG_T::n_hidden],
           typename CONFIG_T::mult_v::bias_t c[CONFIG_T::n_out]) {
    typedef typename x_T::value_type x_elem_t;
    typedef typename y_T::value_type y_elem_t;
    static typename CONFIG_T::h_t h[CONFIG_T::n_hidden];
    x_elem_t x_t[CONFIG_T::n_in];
    y_elem_t y_t[CONFIG_T::n_out];
    #pragma HLS ARRAY_PARTITION variable=h complete
    #pragma HLS ARRAY_PARTITION variable=x_t complete
    #pragma HLS ARRAY_PARTITION variable=y_t complete
    #pragma HLS ARRAY_PARTITION variable=b complete
    #pragma HLS ARRAY_PARTITION variable=c complete

    x_T x_pack = x.read();
    const bool start = x_pack[CONFIG_T::n_in] != 0;
    const bool last = x_pack[CONFIG_T::n_in + 1] != 0;
LoadStep:
    for (unsigned j = 0; j < CONFIG_T::n_in; j++) {
        #pragma HLS UNROLL
        x_t[j] = x_pack[j];
    }
    if (start) {
    ResetState:
        for (unsigned i = 0; i < CONFIG_T::n_hidden; i++) {
            #pragma HLS UNROLL
            h[i] = 0;
        }
    }
    qornn_step<x_elem_t, CONFIG_T>(x_t, h, W, U, b);
    if (CONFIG_T::every_step || last) {
        y_T y_pack;
        PRAGMA_DATA_PACK(y_pack)
        nnet::dense<typename CONFIG_T::h_t, y_elem_t, typename CONFIG_T::mult_v>(h, y_t, V, c);
    StoreStep:
        for (unsigned j = 0; j < CONFIG_T::n_out; j++) {
            #pragma HLS UNROLL
            y_pack[j] = y_t[j];
        }
        y.write(y_pack);
    }
}

} // namespace nnet

#endif
