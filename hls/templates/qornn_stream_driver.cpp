// qornn_stream_driver.cpp -- C-simulation driver of an io_stream qornn core (not synthesized).
//
// Streams many beats through the generated top function in one call (one call of the top function
// per beat, as the free-running core takes them), instead of hls4ml's per-sample predict: the
// verification throughput of `qornn verify --hls` comes from here. Compiled with -O2 together
// with firmware/qornn_core.cpp into one shared library (qornn.hls.csim.build_library).
#include "qornn_core.h"

extern "C" long long qornn_stream_run(const long long *beats, long long nbeats, long long *y, long long y_cap) {
    hls::stream<input_t> in("qornn_in");
    hls::stream<result_t> out("qornn_out");
    const unsigned width = input_t::size;
    const unsigned n_out = result_t::size;
    long long k = 0;
    for (long long b = 0; b < nbeats; b++) {
        input_t pack;
        for (unsigned j = 0; j < width; j++) pack[j] = beats[b * width + j];
        in.write(pack);
        qornn_core(in, out);
        while (!out.empty()) {
            result_t r = out.read();
            if (k < y_cap)
                for (unsigned i = 0; i < n_out; i++) y[k * n_out + i] = r[i].to_int64();
            k++;
        }
    }
    return k;
}
