// flexllm_linear.h: THE quantized linear engine (prefill and decode use the same code, different
// lane counts).
//
//   acc[t][j] = sum_k q[t][k] * w[j][k]                                exact integer (ap_int)
//   uint4:  y[t][j] = ((f32(acc) * s[t]) * s_w[j]) + (zero[t] * wsum[j])
//   int8:   y[t][j] =  (f32(acc) * s[t]) * s_w[j]
//
// with wsum[j] = s_w[j] * f32(sum_k w[j][k]) precomputed offline (GoldenModel LinearParams.wsum).
// == brevitas_models.golden.GoldenModel._linear_q.
//
// Structure (DATAFLOW of three processes connected by hls::streams):
//   linear_read_weights  one sequential burst over the packed weight matrix (rows are contiguous)
//   linear_mac           per block of OUT_LANES output rows: unpack the rows into an on-chip tile,
//                        then for every block of TOKEN_LANES tokens run ceil(d_in / IN_LANES)
//                        pipelined (II = 1) steps of TOKEN_LANES x OUT_LANES x IN_LANES MACs;
//                        the tile is reused by all tokens (prefill: TP x BP systolic use; decode:
//                        TOKEN_LANES = 1, BP x WP MACs per cycle)
//   linear_rescale       fp32 epilogue (or linear_write_acc: exact integer accumulators)
// Lane counts need not divide the run-time sizes: every lane is guarded.
#pragma once

#include <cstdint>

#include "ap_int.h"
#include "flexllm_accumulator.h"
#include "flexllm_types.h"
#include "flexllm_weights.h"
#include "hls_stream.h"

namespace flexllm {

// Compile-time configuration of one linear engine instance.
//   MAX_TOKENS, MAX_IN, MAX_OUT   maxima of the run-time n_tokens, d_in, d_out
//   TOKEN_LANES (TP)              tokens per MAC step (prefill rows of the systolic array)
//   OUT_LANES (BP)                output channels per MAC step
//   IN_LANES (WP)                 input elements per MAC step
//   WEIGHT_BITS                   4 or 8
//   INPUT_KIND                    INPUT_UINT4_ASYM or INPUT_INT8_SYM
template <int MAX_TOKENS, int MAX_IN, int MAX_OUT, int TOKEN_LANES, int OUT_LANES, int IN_LANES,
          int WEIGHT_BITS, int INPUT_KIND>
struct linear_config {
    static constexpr int max_tokens = MAX_TOKENS;
    static constexpr int max_in = MAX_IN;
    static constexpr int max_out = MAX_OUT;
    static constexpr int token_lanes = TOKEN_LANES;
    static constexpr int out_lanes = OUT_LANES;
    static constexpr int in_lanes = IN_LANES;
    static constexpr int weight_bits = WEIGHT_BITS;
    static constexpr int input_kind = INPUT_KIND;

    typedef typename input_code<INPUT_KIND>::type code_t;
    typedef weight_format<WEIGHT_BITS> wfmt;
    // |acc| <= MAX_IN * max|q| * max|w|
    typedef dot_accumulator<MAX_IN, input_code<INPUT_KIND>::max_abs, weight_format<WEIGHT_BITS>::max_abs>
        acc_info;
    static constexpr int acc_bits = acc_info::bits;
    typedef typename acc_info::type acc_t;

    static constexpr int max_row_bytes = weight_format<WEIGHT_BITS>::max_row_bytes(MAX_IN);
    static constexpr long long max_weight_bytes = (long long)MAX_OUT * max_row_bytes;
    static constexpr int max_token_blocks = ceil_div(MAX_TOKENS, TOKEN_LANES);
    static constexpr int max_out_blocks = ceil_div(MAX_OUT, OUT_LANES);
    static constexpr int max_in_blocks = ceil_div(MAX_IN, IN_LANES);

    static_assert(WEIGHT_BITS == 4 || WEIGHT_BITS == 8, "weight_bits must be 4 or 8");
    static_assert(TOKEN_LANES >= 1 && OUT_LANES >= 1 && IN_LANES >= 1, "lanes must be >= 1");
    static_assert(acc_bits <= 32, "accumulator wider than 32 bits: reduce MAX_IN");
};

// TOKEN_LANES x OUT_LANES accumulators handed from the MAC process to the epilogue.
template <class CFG>
struct linear_acc_tile {
    typename CFG::acc_t v[CFG::token_lanes][CFG::out_lanes];
};

// Process 1: stream the d_out packed rows (contiguous) as bytes.
template <class CFG>
void linear_read_weights(const uint8_t *w, hls::stream<uint8_t> &w_stream, int d_in, int d_out) {
    const long long n_bytes = (long long)d_out * CFG::wfmt::row_bytes(d_in);
    constexpr long long MAX_BYTES = CFG::max_weight_bytes;
    (void)MAX_BYTES;  // loop tripcount only
READ_WEIGHTS:
    for (long long i = 0; i < n_bytes; ++i) {
#pragma HLS LOOP_TRIPCOUNT max = MAX_BYTES
#pragma HLS PIPELINE II = 1
        w_stream.write(w[i]);
    }
}

// Process 2: exact integer MACs, one tile of accumulators per (output block, token block).
template <class CFG>
void linear_mac(const typename CFG::code_t q[CFG::max_tokens][CFG::max_in], hls::stream<uint8_t> &w_stream,
                hls::stream<linear_acc_tile<CFG> > &acc_stream, int n_tokens, int d_in, int d_out) {
    typedef typename CFG::acc_t acc_t;
    constexpr int TP = CFG::token_lanes;
    constexpr int BP = CFG::out_lanes;
    constexpr int WP = CFG::in_lanes;
    constexpr int CPB = CFG::wfmt::codes_per_byte;
    constexpr int MAX_OB = CFG::max_out_blocks;
    constexpr int MAX_TB = CFG::max_token_blocks;
    constexpr int MAX_KB = CFG::max_in_blocks;
    constexpr int MAX_RB = CFG::max_row_bytes;
    (void)MAX_OB, (void)MAX_TB, (void)MAX_KB, (void)MAX_RB;  // loop tripcounts only

    // BP unpacked weight rows: all BP rows and WP consecutive inputs readable in one cycle.
    int8_t w_tile[BP][CFG::max_in];
#pragma HLS ARRAY_PARTITION variable = w_tile complete dim = 1
#pragma HLS ARRAY_PARTITION variable = w_tile cyclic factor = WP dim = 2

    const int row_bytes = CFG::wfmt::row_bytes(d_in);
    const int out_blocks = ceil_div(d_out, BP);
    const int token_blocks = ceil_div(n_tokens, TP);
    const int in_blocks = ceil_div(d_in, WP);

OUT_BLOCKS:
    for (int jb = 0; jb < out_blocks; ++jb) {
#pragma HLS LOOP_TRIPCOUNT max = MAX_OB
        const int rows = min_int(BP, d_out - jb * BP);
    LOAD_TILE_ROWS:
        for (int r = 0; r < rows; ++r) {
#pragma HLS LOOP_TRIPCOUNT max = BP
        LOAD_TILE_BYTES:
            for (int b = 0; b < row_bytes; ++b) {
#pragma HLS LOOP_TRIPCOUNT max = MAX_RB
#pragma HLS PIPELINE II = 1
                const uint8_t byte = w_stream.read();
                for (int c = 0; c < CPB; ++c) {
#pragma HLS UNROLL
                    const int k = b * CPB + c;
                    if (k < d_in) w_tile[r][k] = weight_code_of_byte<CFG::weight_bits>(byte, c);
                }
            }
        }
    TOKEN_BLOCKS:
        for (int tb = 0; tb < token_blocks; ++tb) {
#pragma HLS LOOP_TRIPCOUNT max = MAX_TB
            acc_t acc[TP][BP];
#pragma HLS ARRAY_PARTITION variable = acc complete dim = 0
            for (int t = 0; t < TP; ++t) {
#pragma HLS UNROLL
                for (int r = 0; r < BP; ++r) {
#pragma HLS UNROLL
                    acc[t][r] = 0;
                }
            }
        IN_BLOCKS:
            for (int kb = 0; kb < in_blocks; ++kb) {
#pragma HLS LOOP_TRIPCOUNT max = MAX_KB
#pragma HLS PIPELINE II = 1
                for (int t = 0; t < TP; ++t) {
#pragma HLS UNROLL
                    const int tok = tb * TP + t;
                    for (int r = 0; r < BP; ++r) {
#pragma HLS UNROLL
                        acc_t part = 0;
                        for (int i = 0; i < WP; ++i) {
#pragma HLS UNROLL
                            const int k = kb * WP + i;
                            if (k < d_in && tok < n_tokens && r < rows) {
                                part += (ap_int<16>)((int)q[tok][k] * (int)w_tile[r][k]);
                            }
                        }
                        acc[t][r] += part;
                    }
                }
            }
            linear_acc_tile<CFG> tile;
            for (int t = 0; t < TP; ++t) {
#pragma HLS UNROLL
                for (int r = 0; r < BP; ++r) {
#pragma HLS UNROLL
                    tile.v[t][r] = acc[t][r];
                }
            }
            acc_stream.write(tile);
        }
    }
}

// Process 3 (fp32 output): the contract's epilogue; zero and wsum are ignored for int8 inputs.
template <class CFG>
void linear_rescale(hls::stream<linear_acc_tile<CFG> > &acc_stream, const float scale[CFG::max_tokens],
                    const float zero[CFG::max_tokens], const float *w_scale, const float *wsum,
                    float y[CFG::max_tokens][CFG::max_out], int n_tokens, int d_out) {
    constexpr int TP = CFG::token_lanes;
    constexpr int BP = CFG::out_lanes;
    constexpr int MAX_OB = CFG::max_out_blocks;
    constexpr int MAX_TB = CFG::max_token_blocks;
    constexpr bool HAS_ZERO = input_code<CFG::input_kind>::has_zero;
    (void)MAX_OB, (void)MAX_TB;  // loop tripcounts only
    const int out_blocks = ceil_div(d_out, BP);
    const int token_blocks = ceil_div(n_tokens, TP);

    float sw[BP], zw[BP];
#pragma HLS ARRAY_PARTITION variable = sw complete
#pragma HLS ARRAY_PARTITION variable = zw complete
RESCALE_OUT_BLOCKS:
    for (int jb = 0; jb < out_blocks; ++jb) {
#pragma HLS LOOP_TRIPCOUNT max = MAX_OB
    LOAD_CHANNEL_SCALES:
        for (int r = 0; r < BP; ++r) {
#pragma HLS PIPELINE II = 1
            const int j = jb * BP + r;
            if (j < d_out) {
                sw[r] = w_scale[j];
                zw[r] = HAS_ZERO ? wsum[j] : 0.0f;
            }
        }
    RESCALE_TOKEN_BLOCKS:
        for (int tb = 0; tb < token_blocks; ++tb) {
#pragma HLS LOOP_TRIPCOUNT max = MAX_TB
            const linear_acc_tile<CFG> tile = acc_stream.read();
        RESCALE_TILE:
            for (int e = 0; e < TP * BP; ++e) {
#pragma HLS PIPELINE II = 1
                const int t = e / BP;
                const int r = e - t * BP;
                const int tok = tb * TP + t;
                const int j = jb * BP + r;
                if (tok < n_tokens && j < d_out) {
                    float v = (acc_to_f32(tile.v[t][r]) * scale[tok]) * sw[r];
                    if (HAS_ZERO) v = v + (zero[tok] * zw[r]);
                    y[tok][j] = v;
                }
            }
        }
    }
}

// Process 3 (integer output): exact accumulators as int32.
template <class CFG>
void linear_write_acc(hls::stream<linear_acc_tile<CFG> > &acc_stream, int32_t acc[CFG::max_tokens][CFG::max_out],
                      int n_tokens, int d_out) {
    constexpr int TP = CFG::token_lanes;
    constexpr int BP = CFG::out_lanes;
    constexpr int MAX_OB = CFG::max_out_blocks;
    constexpr int MAX_TB = CFG::max_token_blocks;
    (void)MAX_OB, (void)MAX_TB;  // loop tripcounts only
    const int out_blocks = ceil_div(d_out, BP);
    const int token_blocks = ceil_div(n_tokens, TP);
WRITE_ACC_OUT_BLOCKS:
    for (int jb = 0; jb < out_blocks; ++jb) {
#pragma HLS LOOP_TRIPCOUNT max = MAX_OB
    WRITE_ACC_TOKEN_BLOCKS:
        for (int tb = 0; tb < token_blocks; ++tb) {
#pragma HLS LOOP_TRIPCOUNT max = MAX_TB
            const linear_acc_tile<CFG> tile = acc_stream.read();
        WRITE_ACC_TILE:
            for (int e = 0; e < TP * BP; ++e) {
#pragma HLS PIPELINE II = 1
                const int t = e / BP;
                const int r = e - t * BP;
                const int tok = tb * TP + t;
                const int j = jb * BP + r;
                if (tok < n_tokens && j < d_out) acc[tok][j] = (int32_t)tile.v[t][r].to_int();
            }
        }
    }
}

// y[t][j] for t < n_tokens, j < d_out. q: codes [max_tokens][max_in]; scale / zero: per token;
// w: packed weights (flexllm_weights.h) of d_out rows; w_scale, wsum: [d_out] (wsum unused for int8).
template <class CFG>
void linear(const typename CFG::code_t q[CFG::max_tokens][CFG::max_in], const float scale[CFG::max_tokens],
            const float zero[CFG::max_tokens], const uint8_t *w, const float *w_scale, const float *wsum,
            float y[CFG::max_tokens][CFG::max_out], int n_tokens, int d_in, int d_out) {
#pragma HLS DATAFLOW
    constexpr int W_FIFO_DEPTH = CFG::max_row_bytes;  // one packed row
    (void)W_FIFO_DEPTH;  // stream depth only
    hls::stream<uint8_t> w_stream("linear_w_stream");
#pragma HLS STREAM variable = w_stream depth = W_FIFO_DEPTH
    hls::stream<linear_acc_tile<CFG> > acc_stream("linear_acc_stream");
#pragma HLS STREAM variable = acc_stream depth = 2
    linear_read_weights<CFG>(w, w_stream, d_in, d_out);
    linear_mac<CFG>(q, w_stream, acc_stream, n_tokens, d_in, d_out);
    linear_rescale<CFG>(acc_stream, scale, zero, w_scale, wsum, y, n_tokens, d_out);
}

// Same engine, integer output: acc[t][j] = sum_k q[t][k] * w[j][k].
template <class CFG>
void linear_int(const typename CFG::code_t q[CFG::max_tokens][CFG::max_in], const uint8_t *w,
                int32_t acc[CFG::max_tokens][CFG::max_out], int n_tokens, int d_in, int d_out) {
#pragma HLS DATAFLOW
    constexpr int W_FIFO_DEPTH = CFG::max_row_bytes;  // one packed row
    (void)W_FIFO_DEPTH;  // stream depth only
    hls::stream<uint8_t> w_stream("linear_int_w_stream");
#pragma HLS STREAM variable = w_stream depth = W_FIFO_DEPTH
    hls::stream<linear_acc_tile<CFG> > acc_stream("linear_int_acc_stream");
#pragma HLS STREAM variable = acc_stream depth = 2
    linear_read_weights<CFG>(w, w_stream, d_in, d_out);
    linear_mac<CFG>(q, w_stream, acc_stream, n_tokens, d_in, d_out);
    linear_write_acc<CFG>(acc_stream, acc, n_tokens, d_out);
}

}  // namespace flexllm
