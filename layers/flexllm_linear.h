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
// Weights: the multi-port wide layout of flexllm_weights.h (512-bit words, row j in port j % PORTS
// at slot j / PORTS, port p's slice of the matrix at w[p] + w_off, the same offset in every port).
//
// Structure (DATAFLOW, processes connected by hls::streams):
//   linear_read_port x PORTS  one per weight port (unrolled loop): one sequential burst over the
//                             port's slice, one 512-bit word per cycle (II = 1)
//   linear_mac                per block of OUT_LANES output rows: unpacks the words of the block
//                             (OUT_LANES / PORTS consecutive slots of every port; lane r gets row
//                             block * OUT_LANES + r, from port r % PORTS) into an on-chip tile, then
//                             for every block of TOKEN_LANES tokens runs ceil(d_in / IN_LANES)
//                             pipelined steps of TOKEN_LANES x OUT_LANES x IN_LANES MACs; the tile
//                             is reused by all tokens (prefill: TP x BP systolic use; decode:
//                             TOKEN_LANES = 1, BP x WP MACs per cycle). The tile is double-buffered:
//                             block b + 1 is unpacked while block b is multiplied (same pipeline).
//   linear_rescale            fp32 epilogue (or linear_write_acc: exact integer accumulators)
// Lane counts need not divide the run-time sizes: every lane is guarded.
//
// Bandwidth model. Each port delivers one 64-byte word per cycle: PORTS x 64 B per cycle of weights
// (PORTS x 128 int4 codes; at 300 MHz 19.2 GB/s per port, above the ~14 GB/s of one U280 HBM
// pseudo-channel, so each port saturates its channel and the engine reads ~PORTS x 14 GB/s). A block
// costs max(load, mac) cycles with load = (OUT_LANES / PORTS) x row_words (row_words = ceil(d_in /
// codes_per_word)) and mac = token_blocks x ceil(d_in / IN_LANES): decode is weight-bound (the
// goal) when OUT_LANES x IN_LANES >= PORTS x codes_per_word (MACs per cycle >= codes delivered per
// cycle); prefill reuses each tile token_blocks times and is MAC-bound.
// What limits II = 1 of the MAC pipeline: (a) every port's FIFO must hold a word (HBM latency and
// refresh stalls are absorbed by the FIFOs and the double buffer); (b) the loop-carried accumulator
// add (acc_bits <= 32, one adder per lane); (c) tile banks: a word writes codes_per_word
// consecutive codes of one row into the codes_per_word cyclic banks, a MAC step reads IN_LANES <=
// codes_per_word consecutive codes of every row: no bank conflict; (d) q must be partitioned by the
// caller so TOKEN_LANES rows x IN_LANES consecutive codes are readable per cycle.
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
//   OUT_LANES (BP)                output channels per MAC step; a multiple of PORTS
//   IN_LANES (WP)                 input elements per MAC step; <= codes per 512-bit word (128 int4, 64 int8)
//   WEIGHT_BITS                   4 or 8
//   INPUT_KIND                    INPUT_UINT4_ASYM or INPUT_INT8_SYM
//   PORTS                         weight ports (m_axi / HBM pseudo-channels) read in parallel
template <int MAX_TOKENS, int MAX_IN, int MAX_OUT, int TOKEN_LANES, int OUT_LANES, int IN_LANES,
          int WEIGHT_BITS, int INPUT_KIND, int PORTS = 1>
struct linear_config {
    static_assert(WEIGHT_BITS == 4 || WEIGHT_BITS == 8, "weight_bits must be 4 or 8");
    static_assert(TOKEN_LANES >= 1 && OUT_LANES >= 1 && IN_LANES >= 1, "lanes must be >= 1");
    static_assert(PORTS >= 1, "ports must be >= 1");
    static_assert(OUT_LANES % PORTS == 0, "out_lanes must be a multiple of ports (each port feeds out_lanes / ports lanes)");
    static_assert(IN_LANES <= weight_format<WEIGHT_BITS>::codes_per_word,
                  "in_lanes must not exceed the codes of one 512-bit word (128 int4, 64 int8)");

    static constexpr int max_tokens = MAX_TOKENS;
    static constexpr int max_in = MAX_IN;
    static constexpr int max_out = MAX_OUT;
    static constexpr int token_lanes = TOKEN_LANES;
    static constexpr int out_lanes = OUT_LANES;
    static constexpr int in_lanes = IN_LANES;
    static constexpr int weight_bits = WEIGHT_BITS;
    static constexpr int input_kind = INPUT_KIND;
    static constexpr int ports = PORTS;

    typedef typename input_code<INPUT_KIND>::type code_t;
    typedef weight_format<WEIGHT_BITS> wfmt;
    typedef ap_int<WEIGHT_BITS> wcode_t;  // one unpacked weight code in the on-chip tile
    // |acc| <= MAX_IN * max|q| * max|w|
    typedef dot_accumulator<MAX_IN, input_code<INPUT_KIND>::max_abs, weight_format<WEIGHT_BITS>::max_abs>
        acc_info;
    static constexpr int acc_bits = acc_info::bits;
    typedef typename acc_info::type acc_t;

    static constexpr int codes_per_word = wfmt::codes_per_word;
    static constexpr int port_lanes = OUT_LANES / PORTS;  // row slots of one port per block
    static constexpr int max_row_words = weight_row_words(MAX_IN, WEIGHT_BITS);
    static constexpr int tile_in = max_row_words * codes_per_word;  // tile row length (>= MAX_IN)
    static constexpr long long max_slice_words = weight_slice_words(MAX_OUT, MAX_IN, WEIGHT_BITS, PORTS);
    static constexpr int max_token_blocks = ceil_div(MAX_TOKENS, TOKEN_LANES);
    static constexpr int max_out_blocks = ceil_div(MAX_OUT, OUT_LANES);
    static constexpr int max_in_blocks = ceil_div(MAX_IN, IN_LANES);
    // Pipeline steps per block: max(unpack the next block, MACs of this block).
    static constexpr int max_block_steps = max_int(port_lanes * max_row_words, max_token_blocks * max_in_blocks);
    static constexpr int w_fifo_depth = 64;  // words per port FIFO: one 4 KB AXI burst

    static_assert(acc_bits <= 32, "accumulator wider than 32 bits: reduce MAX_IN");
};

// TOKEN_LANES x OUT_LANES accumulators handed from the MAC process to the epilogue.
template <class CFG>
struct linear_acc_tile {
    typename CFG::acc_t v[CFG::token_lanes][CFG::out_lanes];
};

// Process 1 (one instance per port): stream port p's slice w + w_off (slice_words words) in one
// sequential burst, one 512-bit word per cycle.
template <class CFG>
void linear_read_port(const wide_word_t *w, long long w_off, hls::stream<wide_word_t> &w_stream, int d_in,
                      int d_out) {
    const long long n_words = weight_slice_words(d_out, d_in, CFG::weight_bits, CFG::ports);
    constexpr long long MAX_WORDS = CFG::max_slice_words;
    (void)MAX_WORDS;  // loop tripcount only
READ_PORT:
    for (long long i = 0; i < n_words; ++i) {
#pragma HLS LOOP_TRIPCOUNT max = MAX_WORDS
#pragma HLS PIPELINE II = 1
        w_stream.write(w[w_off + i]);
    }
}

// Process 2: exact integer MACs, one tile of accumulators per (output block, token block).
// Iteration `it` of BLOCKS unpacks output block `it` into tile buffer it & 1 (if it < out_blocks)
// while multiplying block it - 1 from the other buffer (if it > 0), in one II = 1 pipeline of
// max(load, mac) steps. Each port contributes min(PL, rows_per_port - it * PL) >= 1 slots to block
// it (PL = OUT_LANES / PORTS), so every port's slice is consumed exactly, zero padding slots included.
template <class CFG>
void linear_mac(const typename CFG::code_t q[CFG::max_tokens][CFG::max_in], hls::stream<wide_word_t> w_streams[CFG::ports],
                hls::stream<linear_acc_tile<CFG> > &acc_stream, int n_tokens, int d_in, int d_out) {
    typedef typename CFG::acc_t acc_t;
    constexpr int TP = CFG::token_lanes;
    constexpr int BP = CFG::out_lanes;
    constexpr int WP = CFG::in_lanes;
    constexpr int P = CFG::ports;
    constexpr int PL = CFG::port_lanes;
    constexpr int CPW = CFG::codes_per_word;
    constexpr int MAX_OB = CFG::max_out_blocks;
    constexpr int MAX_STEPS = CFG::max_block_steps;
    (void)MAX_OB, (void)MAX_STEPS;  // loop tripcounts only

    // Two buffers of BP unpacked weight rows. Banks: rows complete, codes cyclic by CPW, so one
    // word (CPW consecutive codes of one row) is written and WP <= CPW consecutive codes of all BP
    // rows are read in the same cycle without conflicts. The unpack step writes buffer `lb`, the
    // MAC step reads buffer lb ^ 1: never the same element in one iteration or across iterations.
    // Storage: 2 x BP x tile_in codes of WEIGHT_BITS bits (distributed RAM / registers).
    typename CFG::wcode_t w_tile[2][BP][CFG::tile_in];
#pragma HLS ARRAY_PARTITION variable = w_tile complete dim = 1
#pragma HLS ARRAY_PARTITION variable = w_tile complete dim = 2
#pragma HLS ARRAY_PARTITION variable = w_tile cyclic factor = CPW dim = 3
#pragma HLS DEPENDENCE variable = w_tile inter false
#pragma HLS DEPENDENCE variable = w_tile intra false

    const int row_words = weight_row_words(d_in, CFG::weight_bits);
    const int rows_per_port = weight_rows_per_port(d_out, P);
    const int out_blocks = ceil_div(d_out, BP);
    const int token_blocks = ceil_div(n_tokens, TP);
    const int in_blocks = ceil_div(d_in, WP);
    const int mac_steps = token_blocks * in_blocks;

    acc_t acc[TP][BP];
#pragma HLS ARRAY_PARTITION variable = acc complete dim = 0
    for (int t = 0; t < TP; ++t) {
#pragma HLS UNROLL
        for (int r = 0; r < BP; ++r) {
#pragma HLS UNROLL
            acc[t][r] = 0;
        }
    }

BLOCKS:
    for (int it = 0; it <= out_blocks; ++it) {
#pragma HLS LOOP_TRIPCOUNT max = MAX_OB + 1
        const int lb = it & 1;                 // buffer being unpacked (block it)
        const int cb = lb ^ 1;                 // buffer being multiplied (block jb = it - 1)
        const int jb = it - 1;
        const int load_steps = it < out_blocks ? min_int(PL, rows_per_port - it * PL) * row_words : 0;
        const int comp_steps = it > 0 ? mac_steps : 0;
        const int rows = it > 0 ? min_int(BP, d_out - jb * BP) : 0;
        const int steps = max_int(load_steps, comp_steps);
        int slot = 0, wd = 0;  // unpack position: slot of every port, word of the row
        int tb = 0, kb = 0;    // MAC position: token block, input block
    BLOCK_STEPS:
        for (int s = 0; s < steps; ++s) {
#pragma HLS LOOP_TRIPCOUNT max = MAX_STEPS
#pragma HLS PIPELINE II = 1
            if (s < load_steps) {
                // One word from every port: lane slot * P + p <- row (it * BP + slot * P + p), port p.
                for (int p = 0; p < P; ++p) {
#pragma HLS UNROLL
                    int8_t codes[CPW];
#pragma HLS ARRAY_PARTITION variable = codes complete
                    weight_unpack_word<CFG::weight_bits>(w_streams[p].read(), codes);
                    for (int c = 0; c < CPW; ++c) {
#pragma HLS UNROLL
                        w_tile[lb][slot * P + p][wd * CPW + c] = codes[c];
                    }
                }
                if (++wd == row_words) {
                    wd = 0;
                    ++slot;
                }
            }
            if (s < comp_steps) {
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
                                part += (ap_int<16>)((int)q[tok][k] * w_tile[cb][r][k].to_int());
                            }
                        }
                        acc[t][r] = (kb == 0 ? acc_t(0) : acc[t][r]) + part;
                    }
                }
                if (kb == in_blocks - 1) {
                    linear_acc_tile<CFG> tile;
                    for (int t = 0; t < TP; ++t) {
#pragma HLS UNROLL
                        for (int r = 0; r < BP; ++r) {
#pragma HLS UNROLL
                            tile.v[t][r] = acc[t][r];
                        }
                    }
                    acc_stream.write(tile);
                    kb = 0;
                    ++tb;
                } else {
                    ++kb;
                }
            }
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
// w[p] + w_off: port p's slice of the packed weights (flexllm_weights.h, CFG::ports ports, d_out rows
// of d_in codes, same word offset w_off in every port); w_scale, wsum: [d_out] (wsum unused for int8).
template <class CFG>
void linear(const typename CFG::code_t q[CFG::max_tokens][CFG::max_in], const float scale[CFG::max_tokens],
            const float zero[CFG::max_tokens], const wide_word_t *const w[CFG::ports], long long w_off,
            const float *w_scale, const float *wsum, float y[CFG::max_tokens][CFG::max_out], int n_tokens, int d_in,
            int d_out) {
#pragma HLS DATAFLOW
    constexpr int W_FIFO_DEPTH = CFG::w_fifo_depth;
    (void)W_FIFO_DEPTH;  // stream depth only
    hls::stream<wide_word_t> w_streams[CFG::ports];
#pragma HLS STREAM variable = w_streams depth = W_FIFO_DEPTH
    hls::stream<linear_acc_tile<CFG> > acc_stream("linear_acc_stream");
#pragma HLS STREAM variable = acc_stream depth = 2
READ_PORTS:
    for (int p = 0; p < CFG::ports; ++p) {
#pragma HLS UNROLL
        // w[p] with p a constant after unrolling: each reader binds to its own m_axi port (an array
        // of AXI pointers may not be indexed at run time in hardware).
        linear_read_port<CFG>(w[p], w_off, w_streams[p], d_in, d_out);
    }
    linear_mac<CFG>(q, w_streams, acc_stream, n_tokens, d_in, d_out);
    linear_rescale<CFG>(acc_stream, scale, zero, w_scale, wsum, y, n_tokens, d_out);
}

// Same engine, integer output: acc[t][j] = sum_k q[t][k] * w[j][k].
template <class CFG>
void linear_int(const typename CFG::code_t q[CFG::max_tokens][CFG::max_in], const wide_word_t *const w[CFG::ports],
                long long w_off, int32_t acc[CFG::max_tokens][CFG::max_out], int n_tokens, int d_in, int d_out) {
#pragma HLS DATAFLOW
    constexpr int W_FIFO_DEPTH = CFG::w_fifo_depth;
    (void)W_FIFO_DEPTH;  // stream depth only
    hls::stream<wide_word_t> w_streams[CFG::ports];
#pragma HLS STREAM variable = w_streams depth = W_FIFO_DEPTH
    hls::stream<linear_acc_tile<CFG> > acc_stream("linear_int_acc_stream");
#pragma HLS STREAM variable = acc_stream depth = 2
READ_PORTS:
    for (int p = 0; p < CFG::ports; ++p) {
#pragma HLS UNROLL
        linear_read_port<CFG>(w[p], w_off, w_streams[p], d_in, d_out);  // constant p: see linear()
    }
    linear_mac<CFG>(q, w_streams, acc_stream, n_tokens, d_in, d_out);
    linear_write_acc<CFG>(acc_stream, acc, n_tokens, d_out);
}

}  // namespace flexllm
