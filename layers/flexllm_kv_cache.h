// flexllm_kv_cache.h: int8 KV cache in external memory.
//
// Layout (K and V in separate buffers, same geometry):
//   cache[layer][kv_head][max_ctx][head_dim]   int8 codes k_int / v_int
// Positions of one (layer, kv_head) are contiguous, so reading the first n positions is one burst.
// All sizes are run-time values, so one engine serves every layer (layer index is an argument).
#pragma once

#include <cstdint>

#include "flexllm_types.h"

namespace flexllm {

struct kv_cache_geometry {
    int n_kv_heads;  // kv heads per layer
    int max_ctx;     // positions reserved per (layer, kv head)
    int head_dim;
};

// Element offset of row (layer, kv_head, pos).
inline long long kv_row_offset(const kv_cache_geometry &g, int layer, int kv_head, int pos) {
#pragma HLS INLINE
    return (((long long)layer * g.n_kv_heads + kv_head) * g.max_ctx + pos) * g.head_dim;
}

// cache[layer][kv_head][pos][0 .. head_dim-1] = row.
template <int MAX_HD>
void kv_write_row(int8_t *cache, const kv_cache_geometry &g, int layer, int kv_head, int pos,
                  const int8_t row[MAX_HD]) {
    const long long base = kv_row_offset(g, layer, kv_head, pos);
KV_WRITE_ROW:
    for (int i = 0; i < g.head_dim; ++i) {
#pragma HLS LOOP_TRIPCOUNT max = MAX_HD
#pragma HLS PIPELINE II = 1
        cache[base + i] = row[i];
    }
}

// row = cache[layer][kv_head][pos][0 .. head_dim-1].
template <int MAX_HD>
void kv_read_row(const int8_t *cache, const kv_cache_geometry &g, int layer, int kv_head, int pos,
                 int8_t row[MAX_HD]) {
    const long long base = kv_row_offset(g, layer, kv_head, pos);
KV_READ_ROW:
    for (int i = 0; i < g.head_dim; ++i) {
#pragma HLS LOOP_TRIPCOUNT max = MAX_HD
#pragma HLS PIPELINE II = 1
        row[i] = cache[base + i];
    }
}

// buf[u][i] = cache[layer][kv_head][u][i] for u < n_rows (one sequential burst).
template <int MAX_CTX, int MAX_HD>
void kv_read_rows(const int8_t *cache, const kv_cache_geometry &g, int layer, int kv_head, int n_rows,
                  int8_t buf[MAX_CTX][MAX_HD]) {
    const long long base = kv_row_offset(g, layer, kv_head, 0);
    const int hd = g.head_dim;
    const long long n = (long long)n_rows * hd;
    constexpr long long MAX_ELEMS = (long long)MAX_CTX * MAX_HD;
    (void)MAX_ELEMS;  // loop tripcount only
    int u = 0, i = 0;
KV_READ_ROWS:
    for (long long e = 0; e < n; ++e) {
#pragma HLS LOOP_TRIPCOUNT max = MAX_ELEMS
#pragma HLS PIPELINE II = 1
        buf[u][i] = cache[base + e];
        if (++i == hd) {
            i = 0;
            ++u;
        }
    }
}

}  // namespace flexllm
