// Test harness: runs the library's task-graph pieces the way a kernel does, from plain arrays.
//   run_linear / run_linear_int: one reader per port (linear_read_slice), the parameter blocks, the
//     MAC array, the epilogue and a collector (linear_collect / linear_write_acc, test sinks),
//     connected by hls::streams (sequential C simulation).
//   kv_to_words / kv_from_words: the int8 [layers][kv_heads][ctx][head_dim] cache of the Python tests
//     <-> the logical 512-bit row layout (flexllm_kv_cache.h).
//   run_attention: the attention unit with its KV reader and writer tasks, on a logical cache in words
//     (the cache is split into the KV port buffers, read by kv_read_port_rows, the unit runs, the new rows
//     are written by kv_write_port_rows, and the port buffers are joined again).
#pragma once

#include <cstdio>
#include <cstdlib>
#include <vector>

#include "flexllm_attention.h"
#include "flexllm_kv_cache.h"
#include "flexllm_kv_host.h"
#include "flexllm_linear.h"

namespace csim {

// A task graph's streams are empty after a call: every word produced was consumed.
template <class T>
inline void require_empty(hls::stream<T> &s, const char *what) {
    if (!s.empty()) {
        std::fprintf(stderr, "%s: %d words left in the stream\n", what, (int)s.size());
        std::exit(3);
    }
}

// Test sinks of the engine's streams (kernels use flexllm::linear_distribute):
// y[t][j] for t < n_tokens, j < d_out.
template <class CFG, int W>
void linear_collect(hls::stream<flexllm::linear_out_tile<CFG> > &out_stream, float y[CFG::max_tokens][W], int n_tokens,
                    int d_out) {
    constexpr int TP = CFG::token_lanes;
    constexpr int BP = CFG::out_lanes;
    constexpr int MAX_STEPS = CFG::max_out_blocks * CFG::max_token_blocks * TP;
    (void)MAX_STEPS;  // loop tripcount only
    const int token_blocks = flexllm::ceil_div(n_tokens, TP);
    const int steps = flexllm::ceil_div(d_out, BP) * token_blocks * TP;
    flexllm::linear_out_tile<CFG> tile;
    int t = 0, tb = 0, jb = 0;
COLLECT:
    for (int s = 0; s < steps; ++s) {
#pragma HLS LOOP_TRIPCOUNT max = MAX_STEPS
#pragma HLS PIPELINE II = 1
        if (t == 0) tile = out_stream.read();
        const int tok = tb * TP + t;
        for (int r = 0; r < BP; ++r) {
#pragma HLS UNROLL
            const int j = jb * BP + r;
            if (tok < n_tokens && j < d_out) y[tok][j] = tile.v[t][r];
        }
        if (++t == TP) {
            t = 0;
            if (++tb == token_blocks) {
                tb = 0;
                ++jb;
            }
        }
    }
}

// Consumer: exact accumulators as int32 (the integer core, for tests).
template <class CFG, int W>
void linear_write_acc(hls::stream<flexllm::linear_acc_tile<CFG> > &acc_stream, int32_t acc[CFG::max_tokens][W], int n_tokens,
                      int d_out) {
    constexpr int TP = CFG::token_lanes;
    constexpr int BP = CFG::out_lanes;
    const int out_blocks = flexllm::ceil_div(d_out, BP);
    const int token_blocks = flexllm::ceil_div(n_tokens, TP);
WRITE_ACC_OUT_BLOCKS:
    for (int jb = 0; jb < out_blocks; ++jb) {
#pragma HLS LOOP_TRIPCOUNT max = CFG::max_out_blocks
    WRITE_ACC_TOKEN_BLOCKS:
        for (int tb = 0; tb < token_blocks; ++tb) {
#pragma HLS LOOP_TRIPCOUNT max = CFG::max_token_blocks
#pragma HLS PIPELINE II = 1
            const flexllm::linear_acc_tile<CFG> tile = acc_stream.read();
            for (int t = 0; t < TP; ++t) {
#pragma HLS UNROLL
                for (int r = 0; r < BP; ++r) {
#pragma HLS UNROLL
                    const int tok = tb * TP + t;
                    const int j = jb * BP + r;
                    if (tok < n_tokens && j < d_out) acc[tok][j] = (int32_t)tile.v[t][r].to_int();
                }
            }
        }
    }
}


template <class CFG>
void stream_params(const float *w_scale, const float *wsum, int d_out,
                   hls::stream<flexllm::linear_param_block<CFG> > &s) {
    for (int jb = 0; jb * CFG::out_lanes < d_out; ++jb) {
        flexllm::linear_param_block<CFG> blk;
        for (int r = 0; r < CFG::out_lanes; ++r) {
            const int j = jb * CFG::out_lanes + r;
            blk.scale[r] = j < d_out ? w_scale[j] : 0.0f;
            blk.wsum[r] = j < d_out ? wsum[j] : 0.0f;
        }
        s.write(blk);
    }
}

template <class CFG>
void stream_weights(const flexllm::wide_word_t *const *w, long long w_off, int d_in, int d_out,
                    hls::stream<flexllm::wide_word_t> streams[CFG::ports]) {
    for (int p = 0; p < CFG::ports; ++p) flexllm::linear_read_slice<CFG>(w[p], w_off, d_in, d_out, streams[p]);
}

template <class CFG, int W>
void run_linear(const typename CFG::code_t q[CFG::max_tokens][CFG::max_in], const float *scale, const float *zero,
                const flexllm::wide_word_t *const *w, long long w_off, const float *w_scale, const float *wsum,
                float y[CFG::max_tokens][W], int n, int d_in, int d_out, int kind = CFG::input_kind) {
    hls::stream<flexllm::wide_word_t> ws[CFG::ports];
    hls::stream<flexllm::linear_param_block<CFG> > ps;
    hls::stream<flexllm::linear_acc_tile<CFG> > acc;
    hls::stream<flexllm::linear_out_tile<CFG> > out;
    stream_weights<CFG>(w, w_off, d_in, d_out, ws);
    stream_params<CFG>(w_scale, wsum, d_out, ps);
    flexllm::linear_mac<CFG>(q, ws, acc, n, d_in, d_out, kind);
    flexllm::linear_epilogue<CFG>(acc, ps, scale, zero, out, n, d_out, kind);
    linear_collect<CFG, W>(out, y, n, d_out);
}

template <class CFG, int W>
void run_linear_int(const typename CFG::code_t q[CFG::max_tokens][CFG::max_in], const flexllm::wide_word_t *const *w,
                    long long w_off, int32_t acc_out[CFG::max_tokens][W], int n, int d_in, int d_out,
                    int kind = CFG::input_kind) {
    hls::stream<flexllm::wide_word_t> ws[CFG::ports];
    hls::stream<flexllm::linear_acc_tile<CFG> > acc;
    stream_weights<CFG>(w, w_off, d_in, d_out, ws);
    flexllm::linear_mac<CFG>(q, ws, acc, n, d_in, d_out, kind);
    linear_write_acc<CFG, W>(acc, acc_out, n, d_out);
}

inline std::vector<flexllm::wide_word_t> kv_to_words(const std::vector<int8_t> &bytes, size_t rows, int hd) {
    const int rw = flexllm::kv_row_words(hd);
    std::vector<flexllm::wide_word_t> w(rows * rw, 0);
    for (size_t r = 0; r < rows; ++r)
        for (int i = 0; i < hd; ++i)
            w[r * rw + i / 64].range(8 * (i % 64) + 7, 8 * (i % 64)) = (ap_uint<8>)(uint8_t)bytes[r * hd + i];
    return w;
}

inline void kv_from_words(const std::vector<flexllm::wide_word_t> &w, size_t rows, int hd, std::vector<int8_t> &bytes) {
    const int rw = flexllm::kv_row_words(hd);
    for (size_t r = 0; r < rows; ++r)
        for (int i = 0; i < hd; ++i) bytes[r * hd + i] = flexllm::kv_code(w[r * rw + i / 64], i);
}

// One attention call as a kernel runs it: KV reader tasks -> attention unit -> KV writer tasks, KV_LANES of
// the config (geo.lanes is set from it), k_words / v_words logical [layers][kv_heads][max_ctx][row_words].
template <class CFG>
void run_attention(const float q[CFG::max_new][CFG::row], const float k[CFG::max_new][CFG::row],
                   const float v[CFG::max_new][CFG::row], const float *rope_cos, const float *rope_sin,
                   const flexllm::attention_scales<CFG::max_heads, CFG::max_kv_heads> &sc,
                   std::vector<flexllm::wide_word_t> &k_words, std::vector<flexllm::wide_word_t> &v_words,
                   flexllm::kv_cache_geometry geo, int n_layers, int layer, float out[CFG::max_new][CFG::out_row],
                   int n_tokens, int position, int n_heads) {
    constexpr int P = CFG::kv_ports;
    geo.lanes = CFG::kv_lanes;
    std::vector<flexllm::wide_word_t> ports[P];
    hls::stream<flexllm::wide_word_t> kv_in[P], kv_out[P];
    for (int p = 0; p < P; ++p) {
        ports[p].assign(flexllm::kv_port_words(geo, n_layers), 0);
        flexllm::kv_port_from_logical(k_words.data(), v_words.data(), geo, n_layers, p, ports[p].data());
        for (int kh = 0; kh < geo.n_kv_heads; ++kh)
            flexllm::kv_read_port_rows<CFG::max_ctx, CFG::row_words>(ports[p].data(), geo, layer, kh, p, position, kv_in[p]);
    }
    flexllm::attention<CFG>(q, k, v, rope_cos, rope_sin, sc, kv_in, kv_out, geo, out, n_tokens, position, n_heads);
    for (int p = 0; p < P; ++p) {
        for (int kh = 0; kh < geo.n_kv_heads; ++kh)
            flexllm::kv_write_port_rows<CFG::max_new, CFG::row_words>(ports[p].data(), geo, layer, kh, p, position,
                                                                      n_tokens, kv_out[p]);
        require_empty(kv_in[p], "kv_in");
        require_empty(kv_out[p], "kv_out");
        flexllm::kv_logical_from_port(ports[p].data(), geo, n_layers, p, k_words.data(), v_words.data());
    }
}

// Random access to the multi-port weight layout (a reference reader for the tests; kernels stream whole
// slices through one reader task per port instead, flexllm_linear.h).
using flexllm::wide_word_t;
using flexllm::weight_format;
using flexllm::weight_row_word_offset;
using flexllm::weight_port_of_row;
using flexllm::weight_row_words;
using flexllm::weight_code_of_word;

// Word of port `port` at word index `idx` of the matrix (w[p] + w_off + idx). An array of m_axi
// pointers cannot be indexed at run time in hardware (each pointer is a different AXI port), so
// the port is selected by an unrolled loop whose index is a constant in every copy.
template <int PORTS>
inline flexllm::wide_word_t read_port_word(const wide_word_t *const w[PORTS], int port, long long idx) {
#pragma HLS INLINE
    wide_word_t word = 0;
    for (int p = 0; p < PORTS; ++p) {
#pragma HLS UNROLL
        if (p == port) word = w[p][idx];
    }
    return word;
}

// Code w[j][k] read directly from the port layout (random access; engines stream whole slices).
// w[p] + w_off is port p's slice of the matrix.
template <int BITS, int PORTS>
inline int8_t weight_code(const wide_word_t *const w[PORTS], long long w_off, int j, int k, int d_in) {
#pragma HLS INLINE
    constexpr int CPW = weight_format<BITS>::codes_per_word;
    const long long idx = w_off + weight_row_word_offset(j, d_in, BITS, PORTS) + k / CPW;
    const wide_word_t word = read_port_word<PORTS>(w, weight_port_of_row(j, PORTS), idx);
    return weight_code_of_word<BITS>(word, k % CPW);
}

// Unpack row j (d_in codes) into out[0 .. d_in-1] with one sequential burst over its words.
template <int BITS, int PORTS, int MAX_IN>
void unpack_weight_row(const wide_word_t *const w[PORTS], long long w_off, int j, int d_in, int8_t out[MAX_IN]) {
    constexpr int CPW = weight_format<BITS>::codes_per_word;
    constexpr int MAX_WORDS = weight_row_words(MAX_IN, BITS);
    (void)MAX_WORDS;  // loop tripcount only
    const long long base = w_off + weight_row_word_offset(j, d_in, BITS, PORTS);
    const int port = weight_port_of_row(j, PORTS);
    const int n_words = weight_row_words(d_in, BITS);
UNPACK_ROW:
    for (int wd = 0; wd < n_words; ++wd) {
#pragma HLS LOOP_TRIPCOUNT max = MAX_WORDS
#pragma HLS PIPELINE II = 1
        const wide_word_t word = read_port_word<PORTS>(w, port, base + wd);
        for (int c = 0; c < CPW; ++c) {
#pragma HLS UNROLL
            const int k = wd * CPW + c;
            if (k < d_in) out[k] = weight_code_of_word<BITS>(word, c);
        }
    }
}

}  // namespace csim
