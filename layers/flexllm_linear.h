// flexllm_linear.h: THE quantized linear engine of a kernel (prefill and decode use the same code,
// different lane counts). One instance per kernel serves every projection of every layer and the LM
// head: the kernel calls linear_mac / linear_epilogue / linear_distribute from ONE place, with the
// sizes of each call as run-time arguments (flexllm_schedule.h).
//
//   acc[t][j] = sum_k q[t][k] * w[j][k]                                exact integer (ap_int)
//   uint4:  y[t][j] = ((f32(acc) * s[t]) * s_w[j]) + (zero[t] * wsum[j])
//   int8:   y[t][j] =  (f32(acc) * s[t]) * s_w[j]
//
// with wsum[j] = s_w[j] * f32(sum_k w[j][k]) precomputed offline (GoldenModel LinearParams.wsum).
// == brevitas_models.golden.GoldenModel._linear_q.
//
// Task graph of one call (the kernel's DATAFLOW regions; every arrow an hls::stream):
//
//   linear_read_slice   x PORTS  (top-level tasks, one per HBM weight port, the port pointer is that
//                                 task's own argument; 512-bit words, one per cycle, one burst per call)
//   linear_read_params           (top-level task: per output block, the block's s_w and wsum from the
//                                 parameter port, 512-bit words -> one linear_param_block)
//        |  w_streams[PORTS]          |  param_stream
//        v                            v
//   linear_mac  --acc tiles-->  linear_epilogue  --out tiles-->  linear_distribute (flexllm_schedule.h)
//
// linear_mac has two forms chosen at compile time (one engine either way):
//  * streaming (decode: MAX_TOKENS = 1, OUT_LANES = PORTS): weights go straight from the port FIFOs
//    into the PEs. Lane p owns the row of port p in the current block; every word (128 int4 / 64 int8
//    codes of that row) is consumed in ceil(codes_per_word / IN_LANES) cycles by IN_LANES MACs. No
//    weight buffer: a weight is used once per token.
//  * tiled (prefill): the words of a block of OUT_LANES rows are unpacked into a double-buffered
//    on-chip tile, reused by every block of TOKEN_LANES tokens (TP x BP x WP MACs per cycle); block
//    b + 1 is unpacked while block b is multiplied (same pipeline).
// The epilogue rescales a whole row of OUT_LANES outputs per cycle (one token of a tile per cycle),
// so it keeps pace with the MACs whenever ceil(d_in / IN_LANES) >= TOKEN_LANES.
//
// Input kind per call (INPUT_KIND = INPUT_PER_CALL): the engine of a schedule whose calls mix uint4_asym
// and int8 inputs (Quantization.InputQuantOverrides) keeps its 4-bit MAC datapath and takes the kind with
// each call (the `kind` argument, unit_call.kind). An int8 code x = 16 * hi + lo with lo = x & 15 (0..15)
// and hi = x >> 4 (arithmetic, -8..7), so W.x = 16 * (W.hi) + W.lo: an int8 call runs its activations as
// TWO nibble passes over the SAME weights, a uint4 call one pass (its code is its low nibble). The MAC
// operand is a 4-bit nibble with a sign flag (-8..15); the zero-point correction is applied to uint4 calls
// only (call_has_zero). Where the passes come from:
//  * streaming (decode): each weight word is used twice from the on-chip word register (low-nibble
//    sub-steps, then high-nibble sub-steps), the weight stream is read ONCE: 2 x word_steps MAC cycles per
//    word on int8 calls, i.e. the engine consumes at most 1 / (2 x word_steps) words per cycle there (Llama-
//    3.2-1B, WP = 128: 0.5 words per cycle against the 0.69 an HBM channel delivers at 300 MHz, so those
//    calls become MAC-bound, 1.38 x their streaming time); two accumulator sets (one per nibble) per lane.
//  * tiled (prefill): the weight tile of a block is reused (it is on chip anyway); the MAC loop runs its
//    token-block x input-block steps once per nibble (token block, nibble, input block), so the MAC steps of
//    an int8 call double while the tile loads stay as they are.
// The MAC is the int4 x uint4 one: that product is already a signed 4 x 5-bit product, and a signed high
// nibble (-8..7) fits the same 5-bit operand; what a per-call engine adds is the nibble select per operand,
// the x16 of the high pass per fabric accumulator and a second accumulator set per DSP pair (streaming: per
// lane). Why not int4 x int8 MACs for every call: an int8 operand needs 8-bit fabric multipliers (cost/
// resources.py INT8_MAC_LUT 70 LUT against 24) and defeats the DSP packing (two int4 x int8 products per
// DSP48E2 need a 24-bit low field plus 25 high bits at d_in 8192: 49 > 48 accumulator bits). Cost model,
// Llama-3.2-1B (configs/llama32_1b_u280.yaml; python benchmarks/estimates.py ... --set
// "Quantization.InputQuantOverrides={down_proj: int8, lm_head: int8}"):
//                     prefill kernel LUT     decode kernel LUT    decode tok/s @1024   prefill 1024 tokens
//   uint4 only        907,833 (69.6 %)       642,937 (49.3 %)     492.5                0.499 s
//   per call (this)   916,281 (70.3 %)       645,689 (49.5 %)     437.1                0.560 s
//   int8 MACs         1,678,641 (128.8 %)    810,097 (62.1 %)     492.5                (0.499 s) over budget
// (int8 MACs: InputQuant int8 for every call, Prefill.DSPLanes 0: the prefill kernel does not fit the device.)
// The nibble passes cost time on the overridden calls only (down_proj and the LM head: decode linears 1.58
// -> 1.84 ms per token, MAC-bound at 0.5 words per cycle on those calls; prefill linears 219 -> 280 ms).
//
// MAC implementation (MAC_IMPL): MAC_LUT (one product per multiplier, fabric) or MAC_DSP_PACK2 (two
// int4 x uint4 products of two output lanes per DSP48E2 multiply: x * ((w_a << 21) + w_b), exact
// extraction at the end of each row; uint4 inputs, or the nibbles of a per-call engine (-8..15), both
// forms, see dsp_pack2_*).
// Cost model: flexllm_plugin/cost/linear.py (cycles per call, DSP/LUT/FF/BRAM from these loops).
#pragma once

#include <cstdint>

#include "ap_int.h"
#include "flexllm_accumulator.h"
#include "flexllm_counters.h"
#include "flexllm_types.h"
#include "flexllm_weights.h"
#include "hls_stream.h"

namespace flexllm {

enum mac_impl { MAC_LUT = 0, MAC_DSP_PACK2 = 1 };

// Compile-time configuration of the linear engine of a kernel.
//   MAX_TOKENS, MAX_IN, MAX_OUT   maxima of the run-time n_tokens, d_in, d_out (over every call)
//   TOKEN_LANES (TP)              tokens per MAC step (prefill rows of the systolic array)
//   OUT_LANES (BP)                output channels per MAC step; a multiple of PORTS
//   IN_LANES (WP)                 input elements per MAC step; <= codes per 512-bit word (128 int4, 64 int8)
//   WEIGHT_BITS                   4 or 8
//   INPUT_KIND                    INPUT_UINT4_ASYM, INPUT_INT8_SYM, or INPUT_PER_CALL (the kind comes with
//                                 each call; int8 calls as two nibble passes, see above)
//   PORTS                         weight ports (m_axi / HBM pseudo-channels) read in parallel
//   MAC_IMPL                      MAC_LUT or MAC_DSP_PACK2
//   DSP_LANES                     with MAC_DSP_PACK2: output lanes 0 .. DSP_LANES-1 on DSPs (pairs), the rest
//                                 in fabric (tiled form; the streaming form packs all OUT_LANES)
template <int MAX_TOKENS, int MAX_IN, int MAX_OUT, int TOKEN_LANES, int OUT_LANES, int IN_LANES,
          int WEIGHT_BITS, int INPUT_KIND, int PORTS = 1, int MAC_IMPL = MAC_LUT,
          int DSP_LANES = (MAC_IMPL == MAC_DSP_PACK2 ? OUT_LANES : 0)>
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
    static constexpr int mac = MAC_IMPL;
    static constexpr int dsp_lanes = MAC_IMPL == MAC_DSP_PACK2 ? DSP_LANES : 0;
    static constexpr bool per_call = INPUT_KIND == INPUT_PER_CALL;
    static constexpr int max_passes = per_call ? 2 : 1;  // nibble passes of one call (int8 calls: 2)

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
    // streaming form: sub-steps per word (IN_LANES codes of the word per cycle)
    static constexpr int word_steps = ceil_div(codes_per_word, IN_LANES);
    static constexpr bool streaming = MAX_TOKENS == 1 && TOKEN_LANES == 1 && OUT_LANES == PORTS;
    // tiled form: pipeline steps per block = max(unpack the next block, MACs of this block)
    static constexpr int max_block_steps =
        max_int(port_lanes * max_row_words, max_token_blocks * max_in_blocks * max_passes);
    static constexpr int w_fifo_depth = 64;  // words per port FIFO: one 4 KB AXI burst
    // parameter blocks: OUT_LANES scales then OUT_LANES row sums, fp32, in 512-bit words
    static constexpr int param_block_words = ceil_div(2 * OUT_LANES, 16);

    static_assert(acc_bits <= 32, "accumulator wider than 32 bits: reduce MAX_IN");
    static_assert(MAC_IMPL == MAC_LUT || ((INPUT_KIND == INPUT_UINT4_ASYM || INPUT_KIND == INPUT_PER_CALL) &&
                                          WEIGHT_BITS == 4 && OUT_LANES % 2 == 0 && MAX_IN <= 8192),
                  "MAC_DSP_PACK2 packs two int4 x 4-bit (uint4 or nibble) products of two output lanes (even OUT_LANES, "
                  "d_in <= 8192)");
    static_assert(!per_call || WEIGHT_BITS == 4, "INPUT_PER_CALL runs on the int4 weight datapath");
    static_assert(DSP_LANES % 2 == 0 && DSP_LANES >= 0 && DSP_LANES <= OUT_LANES,
                  "DSP_LANES: an even number of output lanes, at most OUT_LANES");
    static_assert(MAC_IMPL == MAC_LUT || MAX_TOKENS > 1 || DSP_LANES == OUT_LANES,
                  "the streaming form packs every output lane (DSP_LANES == OUT_LANES)");
};

// TOKEN_LANES x OUT_LANES accumulators handed from the MAC process to the epilogue.
template <class CFG>
struct linear_acc_tile {
    typename CFG::acc_t v[CFG::token_lanes][CFG::out_lanes];
};

// TOKEN_LANES x OUT_LANES fp32 results handed from the epilogue to the distributor.
template <class CFG>
struct linear_out_tile {
    float v[CFG::token_lanes][CFG::out_lanes];
};

// Per-channel parameters of one block of OUT_LANES output rows (s_w[j], wsum[j]).
template <class CFG>
struct linear_param_block {
    float scale[CFG::out_lanes];
    float wsum[CFG::out_lanes];
};

// ---- loader tasks ---------------------------------------------------------------------------------

// Stream port p's slice of one matrix (w + w_off, slice_words words) in one sequential burst, one
// 512-bit word per cycle. Called by the kernel's reader task of port p (the port pointer is that
// task's own argument).
template <class CFG>
void linear_read_slice(const wide_word_t *w, long long w_off, int d_in, int d_out, hls::stream<wide_word_t> &w_stream) {
    const long long n_words = weight_slice_words(d_out, d_in, CFG::weight_bits, CFG::ports);
    constexpr long long MAX_WORDS = CFG::max_slice_words;
    (void)MAX_WORDS;  // loop tripcount only
READ_SLICE:
    for (long long i = 0; i < n_words; ++i) {
#pragma HLS LOOP_TRIPCOUNT max = MAX_WORDS
#pragma HLS PIPELINE II = 1
        FLEXLLM_COUNT("linear_read_slice");
        w_stream.write(w[w_off + i]);
    }
}

// fp32 number i (0..15) of a 512-bit word.
inline float word_f32(const wide_word_t &word, int i) {
#pragma HLS INLINE
    const ap_uint<32> bits = word.range(32 * i + 31, 32 * i);
    union {
        uint32_t u;
        float f;
    } c;
    c.u = (uint32_t)bits.to_uint();
    return c.f;
}

// Stream the parameter blocks of one call: out_blocks blocks of param_block_words words each
// (layout: brevitas_models.packing.pack_linear_params). One word per cycle.
template <class CFG>
void linear_read_params(const wide_word_t *lmem, long long p_off, int d_out,
                        hls::stream<linear_param_block<CFG> > &param_stream) {
    constexpr int BP = CFG::out_lanes;
    constexpr int BW = CFG::param_block_words;
    constexpr int MAX_STEPS = CFG::max_out_blocks * BW;
    (void)MAX_STEPS;  // loop tripcount only
    const int steps = ceil_div(d_out, BP) * BW;
    linear_param_block<CFG> blk;
#pragma HLS ARRAY_PARTITION variable = blk.scale complete
#pragma HLS ARRAY_PARTITION variable = blk.wsum complete
    int wd = 0;
READ_PARAMS:
    for (int s = 0; s < steps; ++s) {
#pragma HLS LOOP_TRIPCOUNT max = MAX_STEPS
#pragma HLS PIPELINE II = 1
        FLEXLLM_COUNT("linear_read_params");
        const wide_word_t word = lmem[p_off + s];
        for (int i = 0; i < 16; ++i) {
#pragma HLS UNROLL
            const int e = wd * 16 + i;  // element of the block: scales 0..BP-1, sums BP..2BP-1
            if (e < BP) blk.scale[e] = word_f32(word, i);
            else if (e < 2 * BP) blk.wsum[e - BP] = word_f32(word, i);
        }
        if (++wd == BW) {
            param_stream.write(blk);
            wd = 0;
        }
    }
}

// ---- DSP packing of two int4 x uint4 products --------------------------------------------------
// One DSP48E2 multiply (27 x 18 bits) computes x * ((w_a << 21) + w_b) = (x * w_a) << 21 + x * w_b for
// a uint4 x and int4 w_a, w_b. Accumulating up to 8192 such products keeps the low field inside
// +-2^20 (|x * w_b| <= 120, 8192 * 120 < 2^20), so the two sums are recovered exactly from the 48-bit
// accumulator: low = sign-extended bits [20:0], high = (acc - low) >> 21. The signed high nibble of an
// int8 code (x in -8..7, per-call engines) keeps the same bound (|x * w_b| <= 64; the product is a signed
// 27 x 18 multiply either way), so the packing holds for every x in -8..15 (tests/test_layers_csim.py
// test_dsp_pack2_is_exact: every product exhaustively, the extraction over the whole low-field range).
typedef ap_int<48> dsp_acc_t;
static const int DSP_PACK_SHIFT = 21;

inline dsp_acc_t dsp_pack2_product(int x, int w_a, int w_b) {
#pragma HLS INLINE
    const ap_int<27> packed = ((ap_int<27>)w_a << DSP_PACK_SHIFT) + (ap_int<27>)w_b;
    return (dsp_acc_t)(packed * (ap_int<18>)x);
}

inline void dsp_pack2_unpack(const dsp_acc_t &acc, int &sum_a, int &sum_b) {
#pragma HLS INLINE
    const ap_int<DSP_PACK_SHIFT> low = acc.range(DSP_PACK_SHIFT - 1, 0);
    sum_b = low.to_int();
    sum_a = (int)((acc - (dsp_acc_t)low) >> DSP_PACK_SHIFT).to_int64();
}

// ---- the MAC array ----------------------------------------------------------------------------------

// Nibble passes of a call: 2 for an int8 call on a per-call engine, else 1.
template <class CFG>
inline int call_passes(int kind) {
#pragma HLS INLINE
    return (CFG::per_call && kind == INPUT_INT8_SYM) ? 2 : 1;
}

// MAC operand of code x in nibble pass `nib`: fixed-kind engines the code itself; per-call engines the low
// nibble x & 15 (0..15; a uint4 code is its own low nibble) in pass 0, the high nibble x >> 4 (arithmetic,
// -8..7) in pass 1.
template <class CFG>
inline int mac_operand(int x, int nib) {
#pragma HLS INLINE
    if (!CFG::per_call) return x;
    const ap_int<8> c = (ap_int<8>)x;
    return nib ? (int)(c >> 4).to_int() : (int)(c & 15).to_int();
}

// Streaming form (decode, one token): lane p computes the row of port p of each block. Per-call engines,
// int8 calls: each word is used twice from the word register (low nibbles, then high nibbles), each nibble
// pass into its own accumulator set; the row's sum is 16 x high + low.
template <class CFG>
void linear_mac_streaming(const typename CFG::code_t q[CFG::max_tokens][CFG::max_in],
                          hls::stream<wide_word_t> w_streams[CFG::ports],
                          hls::stream<linear_acc_tile<CFG> > &acc_stream, int d_in, int d_out, int kind) {
    typedef typename CFG::acc_t acc_t;
    constexpr int P = CFG::ports;
    constexpr int WP = CFG::in_lanes;
    constexpr int CPW = CFG::codes_per_word;
    constexpr int WS = CFG::word_steps;
    constexpr int NP = CFG::max_passes;
    constexpr int MAX_STEPS = CFG::max_out_blocks * CFG::max_row_words * WS * NP;
    (void)MAX_STEPS;  // loop tripcount only
    const int passes = call_passes<CFG>(kind);
    const int row_words = weight_row_words(d_in, CFG::weight_bits);
    const int row_steps = row_words * WS * passes;
    const int steps = weight_rows_per_port(d_out, P) * row_steps;

    wide_word_t words[P];
#pragma HLS ARRAY_PARTITION variable = words complete
    acc_t acc[NP][P];
#pragma HLS ARRAY_PARTITION variable = acc complete dim = 0
    dsp_acc_t packed[NP][P / 2 > 0 ? P / 2 : 1];
#pragma HLS ARRAY_PARTITION variable = packed complete dim = 0
    int wd = 0, nib = 0, sub = 0;
MAC_STREAM:
    for (int s = 0; s < steps; ++s) {
#pragma HLS LOOP_TRIPCOUNT max = MAX_STEPS
#pragma HLS PIPELINE II = 1
        FLEXLLM_COUNT("linear_mac");
        if (sub == 0 && nib == 0) {
            for (int p = 0; p < P; ++p) {
#pragma HLS UNROLL
                words[p] = w_streams[p].read();
            }
        }
        const bool first = wd == 0 && sub == 0;  // first step of this nibble pass in the row
        if (CFG::mac == MAC_DSP_PACK2) {
            for (int pp = 0; pp < P / 2; ++pp) {
#pragma HLS UNROLL
                dsp_acc_t part = 0;
                for (int i = 0; i < WP; ++i) {
#pragma HLS UNROLL
                    const int c = sub * WP + i;
                    const int k = wd * CPW + c;
                    if (c < CPW && k < d_in) {
                        part += dsp_pack2_product(mac_operand<CFG>((int)q[0][k], nib),
                                                  weight_code_of_word<CFG::weight_bits>(words[2 * pp], c),
                                                  weight_code_of_word<CFG::weight_bits>(words[2 * pp + 1], c));
                    }
                }
                packed[nib][pp] = (first ? dsp_acc_t(0) : packed[nib][pp]) + part;
            }
        } else {
            for (int p = 0; p < P; ++p) {
#pragma HLS UNROLL
                acc_t part = 0;
                for (int i = 0; i < WP; ++i) {
#pragma HLS UNROLL
                    const int c = sub * WP + i;
                    const int k = wd * CPW + c;
                    if (c < CPW && k < d_in) {
                        part += (ap_int<16>)(mac_operand<CFG>((int)q[0][k], nib) *
                                             (int)weight_code_of_word<CFG::weight_bits>(words[p], c));
                    }
                }
                acc[nib][p] = (first ? acc_t(0) : acc[nib][p]) + part;
            }
        }
        if (++sub == WS) {
            sub = 0;
            if (++nib == passes) {
                nib = 0;
                if (++wd == row_words) {
                    wd = 0;
                    linear_acc_tile<CFG> tile;
                    for (int p = 0; p < P; ++p) {
#pragma HLS UNROLL
                        acc_t lo = 0, hi = 0;
                        if (CFG::mac == MAC_DSP_PACK2) {
                            int a = 0, b = 0;
                            dsp_pack2_unpack(packed[0][p / 2], a, b);
                            lo = (p % 2 == 0) ? acc_t(a) : acc_t(b);
                            if (NP == 2) {
                                dsp_pack2_unpack(packed[NP - 1][p / 2], a, b);
                                hi = (p % 2 == 0) ? acc_t(a) : acc_t(b);
                            }
                        } else {
                            lo = acc[0][p];
                            hi = acc[NP - 1][p];
                        }
                        tile.v[0][p] = passes == 2 ? acc_t(lo + (hi << 4)) : lo;
                    }
                    acc_stream.write(tile);
                }
            }
        }
    }
}

// Tiled form (prefill): block `it` of OUT_LANES rows is unpacked into tile buffer it & 1 while block
// it - 1 is multiplied from the other buffer, in one II = 1 pipeline of max(load, mac) steps. Each
// port contributes min(PL, rows_per_port - it * PL) >= 1 slots to block it (PL = OUT_LANES / PORTS), so
// every port's slice is consumed exactly, zero padding slots included. Per-call engines, int8 calls: the
// MAC steps of a block run once per nibble (token block, nibble, input block) over the same tile.
template <class CFG>
void linear_mac_tiled(const typename CFG::code_t q[CFG::max_tokens][CFG::max_in], hls::stream<wide_word_t> w_streams[CFG::ports],
                      hls::stream<linear_acc_tile<CFG> > &acc_stream, int n_tokens, int d_in, int d_out, int kind) {
    typedef typename CFG::acc_t acc_t;
    constexpr int TP = CFG::token_lanes;
    constexpr int BP = CFG::out_lanes;
    constexpr int WP = CFG::in_lanes;
    constexpr int P = CFG::ports;
    constexpr int PL = CFG::port_lanes;
    constexpr int CPW = CFG::codes_per_word;
    constexpr int NP = CFG::max_passes;
    constexpr int MAX_OB = CFG::max_out_blocks;
    constexpr int MAX_STEPS = CFG::max_block_steps;
    (void)MAX_OB, (void)MAX_STEPS;  // loop tripcounts only

    // Two buffers of BP unpacked weight rows. Banks: rows complete, codes cyclic by CPW, so one
    // word (CPW consecutive codes of one row) is written and WP <= CPW consecutive codes of all BP
    // rows are read in the same cycle without conflicts. The unpack step writes buffer `lb`, the
    // MAC step reads buffer lb ^ 1: never the same element in one iteration or across iterations.
    typename CFG::wcode_t w_tile[2][BP][CFG::tile_in];
#pragma HLS ARRAY_PARTITION variable = w_tile complete dim = 1
#pragma HLS ARRAY_PARTITION variable = w_tile complete dim = 2
#pragma HLS ARRAY_PARTITION variable = w_tile cyclic factor = CPW dim = 3
#pragma HLS BIND_STORAGE variable = w_tile type = ram_2p impl = lutram
#pragma HLS DEPENDENCE variable = w_tile inter false
#pragma HLS DEPENDENCE variable = w_tile intra false

    const int row_words = weight_row_words(d_in, CFG::weight_bits);
    const int rows_per_port = weight_rows_per_port(d_out, P);
    const int out_blocks = ceil_div(d_out, BP);
    const int token_blocks = ceil_div(n_tokens, TP);
    const int in_blocks = ceil_div(d_in, WP);
    const int passes = call_passes<CFG>(kind);
    const int mac_steps = token_blocks * in_blocks * passes;

    acc_t acc[TP][BP];
#pragma HLS ARRAY_PARTITION variable = acc complete dim = 0
    // MAC_DSP_PACK2: output lanes 2j, 2j+1 of token lane t, one set per nibble pass
    dsp_acc_t packed[NP][TP][BP / 2 > 0 ? BP / 2 : 1];
#pragma HLS ARRAY_PARTITION variable = packed complete dim = 0

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
        int tb = 0, nib = 0, kb = 0;  // MAC position: token block, nibble pass, input block
    BLOCK_STEPS:
        for (int s = 0; s < steps; ++s) {
#pragma HLS LOOP_TRIPCOUNT max = MAX_STEPS
#pragma HLS PIPELINE II = 1
            FLEXLLM_COUNT("linear_mac");
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
                    if (CFG::dsp_lanes > 0) {  // output lanes 0 .. dsp_lanes-1: two per DSP48E2
                        for (int rp = 0; rp < CFG::dsp_lanes / 2; ++rp) {
#pragma HLS UNROLL
                            dsp_acc_t part = 0;
                            for (int i = 0; i < WP; ++i) {
#pragma HLS UNROLL
                                const int k = kb * WP + i;
                                if (k < d_in && tok < n_tokens) {  // padding rows hold zero codes
                                    part += dsp_pack2_product(mac_operand<CFG>((int)q[tok][k], nib),
                                                              w_tile[cb][2 * rp][k].to_int(),
                                                              w_tile[cb][2 * rp + 1][k].to_int());
                                }
                            }
                            packed[nib][t][rp] = (kb == 0 ? dsp_acc_t(0) : packed[nib][t][rp]) + part;
                        }
                    }
                    {  // the other output lanes: fabric MACs
                        for (int r = CFG::dsp_lanes; r < BP; ++r) {
#pragma HLS UNROLL
                            acc_t part = 0;
                            for (int i = 0; i < WP; ++i) {
#pragma HLS UNROLL
                                const int k = kb * WP + i;
                                if (k < d_in && tok < n_tokens && r < rows) {
                                    part += (ap_int<16>)(mac_operand<CFG>((int)q[tok][k], nib) *
                                                         w_tile[cb][r][k].to_int());
                                }
                            }
                            // the high-nibble pass adds 16 x its products onto the low-nibble sum
                            acc[t][r] = (kb == 0 && nib == 0 ? acc_t(0) : acc[t][r]) + (nib ? acc_t(part << 4) : part);
                        }
                    }
                }
                if (kb == in_blocks - 1 && nib == passes - 1) {
                    linear_acc_tile<CFG> tile;
                    for (int t = 0; t < TP; ++t) {
#pragma HLS UNROLL
                        for (int r = 0; r < BP; ++r) {
#pragma HLS UNROLL
                            if (r < CFG::dsp_lanes) {
                                int a = 0, b = 0;
                                dsp_pack2_unpack(packed[0][t][r / 2], a, b);  // a: lane 2j (high field), b: 2j + 1
                                const acc_t lo = (r % 2 == 0) ? acc_t(a) : acc_t(b);
                                acc_t hi = 0;
                                if (NP == 2) {
                                    dsp_pack2_unpack(packed[NP - 1][t][r / 2], a, b);
                                    hi = (r % 2 == 0) ? acc_t(a) : acc_t(b);
                                }
                                tile.v[t][r] = passes == 2 ? acc_t(lo + (hi << 4)) : lo;
                            } else {
                                tile.v[t][r] = acc[t][r];
                            }
                        }
                    }
                    acc_stream.write(tile);
                    kb = 0;
                    nib = 0;
                    ++tb;
                } else if (kb == in_blocks - 1) {
                    kb = 0;
                    ++nib;
                } else {
                    ++kb;
                }
            }
        }
    }
}

// Exact integer MACs of one call: one accumulator tile per (output block, token block), in that order.
// kind: the input kind of this call (INPUT_UINT4_ASYM / INPUT_INT8_SYM; a fixed-kind engine ignores it).
template <class CFG>
void linear_mac(const typename CFG::code_t q[CFG::max_tokens][CFG::max_in], hls::stream<wide_word_t> w_streams[CFG::ports],
                hls::stream<linear_acc_tile<CFG> > &acc_stream, int n_tokens, int d_in, int d_out, int kind) {
    if (CFG::streaming) {
        linear_mac_streaming<CFG>(q, w_streams, acc_stream, d_in, d_out, kind);
    } else {
        linear_mac_tiled<CFG>(q, w_streams, acc_stream, n_tokens, d_in, d_out, kind);
    }
}

// ---- epilogue and consumers ---------------------------------------------------------------------------

// The contract's rescale, one token row of OUT_LANES outputs per cycle; zero and wsum are ignored for
// int8 inputs (the engine's kind, or on a per-call engine the call's `kind`: a select, no second datapath).
// Reads one parameter block per output block from param_stream.
template <class CFG>
void linear_epilogue(hls::stream<linear_acc_tile<CFG> > &acc_stream, hls::stream<linear_param_block<CFG> > &param_stream,
                     const float scale[CFG::max_tokens], const float zero[CFG::max_tokens],
                     hls::stream<linear_out_tile<CFG> > &out_stream, int n_tokens, int d_out, int kind) {
    constexpr int TP = CFG::token_lanes;
    constexpr int BP = CFG::out_lanes;
    constexpr int MAX_STEPS = CFG::max_out_blocks * CFG::max_token_blocks * TP;
    const bool has_zero = call_has_zero<CFG::input_kind>(kind);
    (void)MAX_STEPS;  // loop tripcount only
    const int token_blocks = ceil_div(n_tokens, TP);
    const int steps = ceil_div(d_out, BP) * token_blocks * TP;

    linear_param_block<CFG> prm;
#pragma HLS ARRAY_PARTITION variable = prm.scale complete
#pragma HLS ARRAY_PARTITION variable = prm.wsum complete
    linear_acc_tile<CFG> tile;
#pragma HLS ARRAY_PARTITION variable = tile.v complete dim = 0
    linear_out_tile<CFG> out;
#pragma HLS ARRAY_PARTITION variable = out.v complete dim = 0
    int t = 0, tb = 0;
EPILOGUE:
    for (int s = 0; s < steps; ++s) {
#pragma HLS LOOP_TRIPCOUNT max = MAX_STEPS
#pragma HLS PIPELINE II = 1
        FLEXLLM_COUNT("linear_epilogue");
        if (t == 0) {
            if (tb == 0) prm = param_stream.read();
            tile = acc_stream.read();
        }
        const int tok = tb * TP + t;
        for (int r = 0; r < BP; ++r) {
#pragma HLS UNROLL
            float v = (acc_to_f32(tile.v[t][r]) * scale[tok < n_tokens ? tok : 0]) * prm.scale[r];
            if (has_zero) v = v + (zero[tok < n_tokens ? tok : 0] * prm.wsum[r]);
            out.v[t][r] = v;
        }
        if (++t == TP) {
            t = 0;
            out_stream.write(out);
            if (++tb == token_blocks) tb = 0;
        }
    }
}

}  // namespace flexllm
