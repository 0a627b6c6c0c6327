// flexllm_kv_host.h: host-side conversions of the KV cache's port layout (flexllm_kv_cache.h) to and from
// the logical cache [layer][kv_head][max_ctx][row_words] in 512-bit words. Used by the C-simulation testbench,
// the hls4ml C-simulation bridge and the tests; never by a kernel (plain loops, no HLS pragmas).
#pragma once

#include "flexllm_kv_cache.h"

namespace flexllm {

// The region of KV port `port` from the logical caches k / v [n_layers][n_kv_heads][max_ctx][rw]
// (words), and back.
inline void kv_port_from_logical(const wide_word_t *k, const wide_word_t *v, const kv_cache_geometry &g, int n_layers,
                                 int port, wide_word_t *region) {
    const wide_word_t *src = port < g.lanes ? k : v;
    const int rw = kv_row_words(g.head_dim), residue = port % g.lanes;
    for (int l = 0; l < n_layers; ++l)
        for (int kh = 0; kh < g.n_kv_heads; ++kh)
            for (int u = residue; u < g.max_ctx; u += g.lanes)
                for (int wd = 0; wd < rw; ++wd)
                    region[kv_port_row_offset(g, l, kh, u / g.lanes) + wd] =
                        src[(((long long)l * g.n_kv_heads + kh) * g.max_ctx + u) * rw + wd];
}

inline void kv_logical_from_port(const wide_word_t *region, const kv_cache_geometry &g, int n_layers, int port,
                                 wide_word_t *k, wide_word_t *v) {
    wide_word_t *dst = port < g.lanes ? k : v;
    const int rw = kv_row_words(g.head_dim), residue = port % g.lanes;
    for (int l = 0; l < n_layers; ++l)
        for (int kh = 0; kh < g.n_kv_heads; ++kh)
            for (int u = residue; u < g.max_ctx; u += g.lanes)
                for (int wd = 0; wd < rw; ++wd)
                    dst[(((long long)l * g.n_kv_heads + kh) * g.max_ctx + u) * rw + wd] =
                        region[kv_port_row_offset(g, l, kh, u / g.lanes) + wd];
}

}  // namespace flexllm
