// flexllm_schedule.h: a stage as a schedule of invocations of shared hardware units.
//
// A kernel owns ONE instance of each unit (linear engine, RMSNorm, token quantizer, attention, SwiGLU,
// Hadamard) and runs a decoder stage as a flat loop over unit calls: the block's calls once per layer,
// then the tail (final norm, LM-head input quantization, LM head). Each call is a row of a constant
// table (unit_call) with its run-time sizes and external-memory offsets (layer l's parameters at
// off + l * stride). The tables are written by the hls4ml pass `bind_units`
// (flexllm_plugin/backend/passes/bind_units.py); the kernel loop (kernel template stage_core) reads the
// same tables in its weight / parameter reader tasks and in its compute core, so the order in which
// the readers stream weights is by construction the order in which the engine consumes them.
//
// Activation buffers are fixed roles (the Llama block): the residual stream h, the pre-quantization
// activations x, the linear input codes with their per-token scale and zero, the projections q, k, v,
// gate, up, and the logits. A linear call names its destination (linear_dest) and the distributor
// below writes the engine's output tiles there; o_proj and down_proj add into h (the residual add
// fused into the engine's output: h + y, the same fp32 addition as FlexResidualAdd).
#pragma once

#include "flexllm_counters.h"
#include "flexllm_linear.h"
#include "flexllm_types.h"
#include "hls_stream.h"

namespace flexllm {

enum unit_kind { UNIT_RMSNORM = 0, UNIT_QUANT = 1, UNIT_LINEAR = 2, UNIT_ATTENTION = 3, UNIT_SWIGLU = 4, UNIT_HADAMARD = 5 };

enum linear_dest { DEST_Q = 0, DEST_K = 1, DEST_V = 2, DEST_GATE = 3, DEST_UP = 4, DEST_RESIDUAL = 5, DEST_LOGITS = 6 };

// One unit invocation. Fields by unit:
//   UNIT_RMSNORM   d_in = row length; w_off/w_stride: fp32 weight in fmem; flag = 1: last token only
//                  (h[n_tokens - 1] -> x[0]); eps
//   UNIT_QUANT     d_in = row length (x -> codes, scale, zero); kind = input_quant_kind of the codes;
//                  clip = clip ratio of a uint4_asym range (1: none)
//   UNIT_LINEAR    d_in, d_out; w_off/w_stride: 512-bit word offset of the matrix in every weight port;
//                  p_off/p_stride: 512-bit word offset of its parameter blocks (lmem); flag = linear_dest;
//                  kind = input_quant_kind of the codes it reads (an engine of kind INPUT_PER_CALL runs
//                  int8 calls as two nibble passes, flexllm_linear.h)
//   UNIT_ATTENTION, UNIT_SWIGLU, UNIT_HADAMARD   d_in = row length (constants are the unit's own)
// kind and clip are the quantization spec's per site (Quantization.InputQuantOverrides / InputClipRatios),
// written per call by bind_units; kind is the stage's input kind and clip 1 where the spec has none.
struct unit_call {
    int unit;
    int d_in;
    int d_out;
    int flag;
    long long w_off;
    long long w_stride;
    long long p_off;
    long long p_stride;
    float eps;
    int kind;
    float clip;
};

// Writes the engine's output tiles of one linear call to its destination buffer (one token row of
// OUT_LANES outputs per cycle; the destination arrays are banked by OUT_LANES on their columns).
// q, k, v: [MAX_T][ROW]; gate, up, h: [MAX_T][W]; logits: [VOCAB] (row 0 of a one-token call).
template <class CFG, int ROW, int W, int VOCAB>
void linear_distribute(hls::stream<linear_out_tile<CFG> > &out_stream, int dest, int n_tokens, int d_out,
                       float q[CFG::max_tokens][ROW], float k[CFG::max_tokens][ROW], float v[CFG::max_tokens][ROW],
                       float gate[CFG::max_tokens][W], float up[CFG::max_tokens][W], float h[CFG::max_tokens][W],
                       float logits[VOCAB]) {
    constexpr int TP = CFG::token_lanes;
    constexpr int BP = CFG::out_lanes;
    constexpr int MAX_STEPS = CFG::max_out_blocks * CFG::max_token_blocks * TP;
    (void)MAX_STEPS;  // loop tripcount only
    const int token_blocks = ceil_div(n_tokens, TP);
    const int steps = ceil_div(d_out, BP) * token_blocks * TP;
    linear_out_tile<CFG> tile;
#pragma HLS ARRAY_PARTITION variable = tile.v complete dim = 0
    int t = 0, tb = 0, jb = 0;
DISTRIBUTE:
    for (int s = 0; s < steps; ++s) {
#pragma HLS LOOP_TRIPCOUNT max = MAX_STEPS
#pragma HLS PIPELINE II = 1
        FLEXLLM_COUNT("linear_distribute");
        if (t == 0) tile = out_stream.read();
        const int tok = tb * TP + t;
        for (int r = 0; r < BP; ++r) {
#pragma HLS UNROLL
            const int j = jb * BP + r;
            if (tok < n_tokens && j < d_out) {
                const float y = tile.v[t][r];
                switch (dest) {
                    case DEST_Q: q[tok][j] = y; break;
                    case DEST_K: k[tok][j] = y; break;
                    case DEST_V: v[tok][j] = y; break;
                    case DEST_GATE: gate[tok][j] = y; break;
                    case DEST_UP: up[tok][j] = y; break;
                    case DEST_RESIDUAL: h[tok][j] = h[tok][j] + y; break;
                    default: logits[j] = y; break;
                }
            }
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

}  // namespace flexllm
