// flexllm_kv_cache.h: int8 KV cache in external memory, spread over the HBM channels of the weight ports.
//
// KV_LANES = C ports hold K, C more hold V (C = min(KEY_LANES, WEIGHT_PORTS / 2), chosen by the writer): key
// position u lives on K port u % C and on V port C + u % C, at slot u / C. Each KV port is its own device
// buffer on the HBM pseudo-channel of weight port p (same channel, so K/V reads use the bandwidth of C
// channels each instead of one), laid out in 512-bit words (wide_word_t):
//   region[layer][kv_head][slot][row_words]        slots = ceil(max_ctx / C), row_words = ceil(head_dim / 64)
// Row (layer, kv_head, u) holds the int8 codes k_int / v_int of position u in bytes 0 .. head_dim-1 of its
// words (byte b of a row = bits [8(b%64)+7 : 8(b%64)] of word b / 64), the rest zero. The rows a port holds
// for (layer, kv_head) are contiguous and in increasing position, so the cached rows u < n of one port are one
// burst, and C ports deliver C keys (their K or V rows) per cycle to the attention unit.
// Kernel tasks: one reader task per KV port (kv_read_port_rows: cached rows -> the attention unit) and one
// writer task per KV port (kv_write_port_rows: the new rows the attention unit sends -> the port), each with
// its own m_axi argument bound to the same buffer: no pointer shared between tasks, no feedback.
// Host side (flexllm_kv_host.h, not part of any kernel): a port region to and from the logical
// [layer][kv_head][max_ctx][row_words] cache (testbench, C-simulation bridge, tests).
// All sizes are run-time values, so one unit serves every layer (layer index is an argument).
// Python twin: kv_row_bytes / kv_port_bytes in flexllm_plugin/project/spec.py.
#pragma once

#include <cstdint>

#include "flexllm_counters.h"
#include "hls_stream.h"
#include "flexllm_types.h"
#include "flexllm_weights.h"

namespace flexllm {

struct kv_cache_geometry {
    int n_kv_heads;  // kv heads per layer
    int max_ctx;     // positions reserved per (layer, kv head)
    int head_dim;
    int lanes;       // C: K ports (= V ports); key u on K port u % C and V port C + u % C
};

constexpr int kv_row_words(int head_dim) { return ceil_div(head_dim, WORD_BYTES); }

// Slots of one (layer, kv head) on a port.
inline int kv_slots(const kv_cache_geometry &g) {
#pragma HLS INLINE
    return ceil_div(g.max_ctx, g.lanes);
}

// Word offset of slot `slot` of (layer, kv_head) in a port region.
inline long long kv_port_row_offset(const kv_cache_geometry &g, int layer, int kv_head, int slot) {
#pragma HLS INLINE
    return (((long long)layer * g.n_kv_heads + kv_head) * kv_slots(g) + slot) * kv_row_words(g.head_dim);
}

// Words of one port region (n_layers layers).
inline long long kv_port_words(const kv_cache_geometry &g, int n_layers) {
    return (long long)n_layers * g.n_kv_heads * kv_slots(g) * kv_row_words(g.head_dim);
}

// Code i of a row held in words (i < head_dim).
inline int8_t kv_code(const wide_word_t &word, int i) {
#pragma HLS INLINE
    const ap_int<8> v = word.range(8 * (i % WORD_BYTES) + 7, 8 * (i % WORD_BYTES));
    return (int8_t)v.to_int();
}

// Reader task body of KV port `port` (K port if port < C, else V port) for (layer, kv_head): its cached rows
// u < n_cached (u % C == port % C, increasing u), one burst, one word per cycle into `out`.
template <int MAX_CTX, int MAX_RW>
void kv_read_port_rows(const wide_word_t *kv, const kv_cache_geometry &g, int layer, int kv_head, int port,
                       int n_cached, hls::stream<wide_word_t> &out) {
    const int residue = port % g.lanes;
    const int rows = n_cached > residue ? ceil_div(n_cached - residue, g.lanes) : 0;
    const long long n = (long long)rows * kv_row_words(g.head_dim);
    const long long base = kv_port_row_offset(g, layer, kv_head, 0);
    constexpr long long MAX_WORDS = (long long)MAX_CTX * MAX_RW;
    (void)MAX_WORDS;  // loop tripcount only
KV_READ_PORT_ROWS:
    for (long long e = 0; e < n; ++e) {
#pragma HLS LOOP_TRIPCOUNT max = MAX_WORDS
#pragma HLS PIPELINE II = 1
        FLEXLLM_COUNT("kv_read_port_rows");
        out.write(kv[base + e]);
    }
}

// Writer task body of KV port `port` for (layer, kv_head): of the new rows at positions position ..
// position + n_new - 1, the ones this port holds (pos % C == port % C), words from `in` in increasing
// position, one burst (their slots are consecutive), one word per cycle.
template <int MAX_NEW, int MAX_RW>
void kv_write_port_rows(wide_word_t *kv, const kv_cache_geometry &g, int layer, int kv_head, int port, int position,
                        int n_new, hls::stream<wide_word_t> &in) {
    const int residue = port % g.lanes;
    const int first = (residue - position % g.lanes + g.lanes) % g.lanes;  // first new row this port holds
    const int rows = n_new > first ? ceil_div(n_new - first, g.lanes) : 0;
    const long long n = (long long)rows * kv_row_words(g.head_dim);
    const long long base = kv_port_row_offset(g, layer, kv_head, (position + first) / g.lanes);
    constexpr int MAX_WORDS = MAX_NEW * MAX_RW;
    (void)MAX_WORDS;  // loop tripcount only
KV_WRITE_PORT_ROWS:
    for (long long e = 0; e < n; ++e) {
#pragma HLS LOOP_TRIPCOUNT max = MAX_WORDS
#pragma HLS PIPELINE II = 1
        FLEXLLM_COUNT("kv_write_port_rows");
        kv[base + e] = in.read();
    }
}

// Words of one row from codes (on-chip form of a new entry).
template <int MAX_HD, int MAX_RW>
void kv_pack_row(const int8_t row[MAX_HD], int head_dim, wide_word_t words[MAX_RW]) {
#pragma HLS INLINE
    for (int wd = 0; wd < MAX_RW; ++wd) {
#pragma HLS UNROLL
        wide_word_t word = 0;
        for (int b = 0; b < WORD_BYTES; ++b) {
#pragma HLS UNROLL
            const int i = wd * WORD_BYTES + b;
            if (i < head_dim && i < MAX_HD) word.range(8 * b + 7, 8 * b) = (ap_uint<8>)(uint8_t)row[i];
        }
        words[wd] = word;
    }
}

}  // namespace flexllm
