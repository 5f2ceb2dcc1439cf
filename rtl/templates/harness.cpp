// qornn Verilator harness: streams a binary file of input beats through the core with random
// valid/ready stalls and writes every output beat and every hidden state to a binary file.
// Generic over the core's sizes (qornn_tb.h) and Verilator's port types (scalar or VlWide).
//
// usage: harness IN OUT SEED IN_VALID_PCT OUT_READY_PCT MAX_CYCLES
// IN : int64 beats, then beats x (M int32 codes + int32 flags: bit0 start, bit1 last)
// OUT: int64 [out_beats, h_records, cycles, accepted, violations, timed_out], then
//      out_beats x (O int64 codes + int64 last), then h_records x N int32 codes
#include "Vqornn_core.h"
#include "verilated.h"
#include "qornn_tb.h"
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

static void to_words(uint8_t v, uint32_t *w) { w[0] = v; }
static void to_words(uint16_t v, uint32_t *w) { w[0] = v; }
static void to_words(uint32_t v, uint32_t *w) { w[0] = v; }
static void to_words(uint64_t v, uint32_t *w) { w[0] = (uint32_t)v; w[1] = (uint32_t)(v >> 32); }
template <std::size_t N> static void to_words(const VlWide<N> &v, uint32_t *w) {
    for (std::size_t i = 0; i < N; i++) w[i] = v[i];
}
static void from_words(uint8_t &v, const uint32_t *w) { v = (uint8_t)w[0]; }
static void from_words(uint16_t &v, const uint32_t *w) { v = (uint16_t)w[0]; }
static void from_words(uint32_t &v, const uint32_t *w) { v = w[0]; }
static void from_words(uint64_t &v, const uint32_t *w) { v = w[0] | ((uint64_t)w[1] << 32); }
template <std::size_t N> static void from_words(VlWide<N> &v, const uint32_t *w) {
    for (std::size_t i = 0; i < N; i++) v[i] = w[i];
}

// signed field [lo, lo+bits) of a little-endian word array (bits <= 64)
static int64_t get_field(const uint32_t *w, int lo, int bits) {
    const int k = lo >> 5, s = lo & 31;
    uint64_t v = (uint64_t)w[k] | ((uint64_t)w[k + 1] << 32);   // arrays carry spare words
    v >>= s;
    if (s + bits > 64) v |= (uint64_t)w[k + 2] << (64 - s);
    if (bits < 64) {
        v &= (1ULL << bits) - 1;
        if ((v >> (bits - 1)) & 1) v |= ~0ULL << bits;
    }
    return (int64_t)v;
}
static void put_field(uint32_t *w, int lo, int bits, int64_t x) {
    for (int b = 0; b < bits; b++) {
        uint32_t bit = (uint32_t)(((uint64_t)x >> b) & 1u);
        w[(lo + b) >> 5] = (w[(lo + b) >> 5] & ~(1u << ((lo + b) & 31))) | (bit << ((lo + b) & 31));
    }
}

static uint64_t rng_state;
static inline uint32_t rnd100() {  // xorshift64*, uniform enough for stall patterns
    rng_state ^= rng_state >> 12; rng_state ^= rng_state << 25; rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * 2685821657736338717ULL) >> 33) % 100u;
}

int main(int argc, char **argv) {
    if (argc != 7) { fprintf(stderr, "usage: %s IN OUT SEED IN_VALID_PCT OUT_READY_PCT MAX_CYCLES\n", argv[0]); return 2; }
    FILE *fi = fopen(argv[1], "rb");
    if (!fi) { perror(argv[1]); return 2; }
    int64_t nbeats = 0;
    if (fread(&nbeats, 8, 1, fi) != 1) return 2;
    std::vector<int32_t> beats((size_t)nbeats * (QORNN_M + 1));
    if (nbeats && fread(beats.data(), 4, beats.size(), fi) != beats.size()) { fprintf(stderr, "short input\n"); return 2; }
    fclose(fi);
    rng_state = strtoull(argv[3], 0, 10) * 0x9E3779B97F4A7C15ULL + 1;
    const uint32_t pin = (uint32_t)atoi(argv[4]), pout = (uint32_t)atoi(argv[5]);
    const int64_t max_cycles = strtoll(argv[6], 0, 10);

    int64_t expect_out = 0;
    for (int64_t b = 0; b < nbeats; b++)
        if (QORNN_EVERY_STEP || (beats[b * (QORNN_M + 1) + QORNN_M] & 2)) expect_out++;
    std::vector<int64_t> outs;
    outs.reserve((size_t)expect_out * (QORNN_O + 1));
    std::vector<int32_t> hs;
    hs.reserve((size_t)nbeats * QORNN_N);

    Vqornn_core *core = new Vqornn_core;
    uint32_t xw[(QORNN_M * QORNN_KX + 31) / 32 + 2] = {0};
    uint32_t yw[(QORNN_O * QORNN_OW + 31) / 32 + 2] = {0}, yhold[(QORNN_O * QORNN_OW + 31) / 32 + 2] = {0};
    uint32_t hw[(QORNN_N * QORNN_KH + 31) / 32 + 2] = {0};  // spare words read as 0 by get_field
    const int ywords = (QORNN_O * QORNN_OW + 31) / 32;
    core->clk = 0; core->rst = 1; core->in_valid = 0; core->out_ready = 0;
    core->eval(); core->clk = 1; core->eval(); core->clk = 0; core->eval();
    core->rst = 0; core->eval();

    int64_t next = 0, cycles = 0, violations = 0, nout = 0;
    bool held_valid = false; int held_last = 0;
    bool beat_up = false;  // the current beat is presented (valid) and must stay until taken
    while ((next < nbeats || nout < expect_out) && cycles < max_cycles) {
        // drive inputs for this cycle (before the rising edge)
        if (next < nbeats && (beat_up || rnd100() < pin)) {
            if (!beat_up) {
                memset(xw, 0, sizeof xw);
                const int32_t *bt = &beats[next * (QORNN_M + 1)];
                for (int j = 0; j < QORNN_M; j++) put_field(xw, j * QORNN_KX, QORNN_KX, bt[j]);
                from_words(core->in_x, xw);
                core->in_start = bt[QORNN_M] & 1;
                core->in_last = (bt[QORNN_M] >> 1) & 1;
                beat_up = true;
            }
            core->in_valid = 1;
        } else {
            core->in_valid = 0;
        }
        core->out_ready = rnd100() < pout ? 1 : 0;
        core->clk = 0; core->eval();   // falling edge and this cycle's inputs in one eval
        const bool take_in = core->in_valid && core->in_ready;
        const bool take_out = core->out_valid && core->out_ready;
        if (core->out_valid) {  // a presented output beat must not change until taken
            to_words(core->out_y, yw);
            if (held_valid && (memcmp(yw, yhold, ywords * 4) != 0 || held_last != core->out_last)) violations++;
            memcpy(yhold, yw, ywords * 4); held_last = core->out_last; held_valid = !take_out;
            if (take_out) {
                for (int i = 0; i < QORNN_O; i++) outs.push_back(get_field(yw, i * QORNN_OW, QORNN_OW));
                outs.push_back(core->out_last);
                nout++;
            }
        } else if (held_valid) {
            violations++;  // valid dropped without a transfer
            held_valid = false;
        }
        core->clk = 1; core->eval();
        if (take_in) { next++; beat_up = false; }
        if (core->dbg_h_valid) {
            to_words(core->dbg_h, hw);
            for (int j = 0; j < QORNN_N; j++) hs.push_back((int32_t)get_field(hw, j * QORNN_KH, QORNN_KH));
        }
        cycles++;
    }
    const int64_t timed_out = (next < nbeats || nout < expect_out) ? 1 : 0;
    // drain: a few idle cycles must produce no extra beat
    core->in_valid = 0; core->out_ready = 1;
    for (int k = 0; k < 8 && !timed_out; k++) {
        core->clk = 0; core->eval();
        if (core->out_valid) violations++;
        core->clk = 1; core->eval();
    }
    FILE *fo = fopen(argv[2], "wb");
    if (!fo) { perror(argv[2]); return 2; }
    const int64_t nh = (int64_t)(hs.size() / QORNN_N);
    int64_t head[6] = {nout, nh, cycles, next, violations, timed_out};
    fwrite(head, 8, 6, fo);
    fwrite(outs.data(), 8, outs.size(), fo);
    fwrite(hs.data(), 4, hs.size(), fo);
    fclose(fo);
    delete core;
    return 0;
}
