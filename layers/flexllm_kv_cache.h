// flexllm_kv_cache.h: int8 KV cache in external memory, on 512-bit ports.
//
// Layout (K and V in separate buffers, same geometry), in 512-bit words (wide_word_t):
//   cache[layer][kv_head][max_ctx][row_words]     row_words = ceil(head_dim / 64)
// Row (layer, kv_head, pos) holds the int8 codes k_int / v_int of that position in bytes
// 0 .. head_dim-1 of its words (byte b of a row = bits [8(b%64)+7 : 8(b%64)] of word b / 64), the rest
// zero. Positions of one (layer, kv_head) are contiguous, so reading the first n positions is one
// burst of n * row_words words (one word per cycle: 64 codes per cycle per port).
// All sizes are run-time values, so one unit serves every layer (layer index is an argument).
// Python twin: kv_row_words / kv_cache_words in flexllm_plugin/project/spec.py.
#pragma once

#include <cstdint>

#include "flexllm_counters.h"
#include "flexllm_types.h"
#include "flexllm_weights.h"

namespace flexllm {

struct kv_cache_geometry {
    int n_kv_heads;  // kv heads per layer
    int max_ctx;     // positions reserved per (layer, kv head)
    int head_dim;
};

constexpr int kv_row_words(int head_dim) { return ceil_div(head_dim, WORD_BYTES); }

// Word offset of row (layer, kv_head, pos).
inline long long kv_row_offset(const kv_cache_geometry &g, int layer, int kv_head, int pos) {
#pragma HLS INLINE
    return (((long long)layer * g.n_kv_heads + kv_head) * g.max_ctx + pos) * kv_row_words(g.head_dim);
}

// Code i of a row held in words (i < head_dim).
inline int8_t kv_code(const wide_word_t &word, int i) {
#pragma HLS INLINE
    const ap_int<8> v = word.range(8 * (i % WORD_BYTES) + 7, 8 * (i % WORD_BYTES));
    return (int8_t)v.to_int();
}

// cache[layer][kv_head][pos] = the row's words (kv_pack_row), one word per cycle.
template <int MAX_RW>
void kv_write_row(wide_word_t *cache, const kv_cache_geometry &g, int layer, int kv_head, int pos,
                  const wide_word_t words[MAX_RW]) {
    const long long base = kv_row_offset(g, layer, kv_head, pos);
KV_WRITE_ROW:
    for (int wd = 0; wd < kv_row_words(g.head_dim); ++wd) {
#pragma HLS LOOP_TRIPCOUNT max = MAX_RW
#pragma HLS PIPELINE II = 1
        FLEXLLM_COUNT("kv_write_row");
        cache[base + wd] = words[wd];
    }
}

// K and V rows together: kbuf[u] / vbuf[u] = rows u < n_rows of (layer, kv_head) from both caches, one
// word of each per cycle (the two ports stream concurrently: one burst each).
template <int MAX_CTX, int MAX_RW>
void kv_read_rows_pair(const wide_word_t *k_cache, const wide_word_t *v_cache, const kv_cache_geometry &g, int layer,
                       int kv_head, int n_rows, wide_word_t kbuf[MAX_CTX][MAX_RW], wide_word_t vbuf[MAX_CTX][MAX_RW]) {
    const long long base = kv_row_offset(g, layer, kv_head, 0);
    const int rw = kv_row_words(g.head_dim);
    const long long n = (long long)n_rows * rw;
    constexpr long long MAX_WORDS = (long long)MAX_CTX * MAX_RW;
    (void)MAX_WORDS;  // loop tripcount only
    int u = 0, wd = 0;
KV_READ_ROWS_PAIR:
    for (long long e = 0; e < n; ++e) {
#pragma HLS LOOP_TRIPCOUNT max = MAX_WORDS
#pragma HLS PIPELINE II = 1
        FLEXLLM_COUNT("kv_read_rows_pair");
        kbuf[u][wd] = k_cache[base + e];
        vbuf[u][wd] = v_cache[base + e];
        if (++wd == rw) {
            wd = 0;
            ++u;
        }
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
