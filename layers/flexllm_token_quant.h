// flexllm_token_quant.h: per-token dynamic quantization of linear inputs and static quantization.
//
//   quantize_uint4_asym_row   mn = clip * min x, mx = clip * max x (clip in (0, 1], default 1: exact
//                             min and max), s = (mx - mn) / 15, inv = 1 / s,
//                             q = clamp(rint((x - mn) * inv), 0, 15); zero = mn
//                             (clip < 1: values outside [mn, mx] saturate at code 0 or 15)
//   quantize_int8_sym_row     a = max |x|, s = a / 128, inv = 1 / s, q = clamp(rint(x * inv), -128, 127)
//   guard (both)              s < 2^-126  ->  s = 1, q = 0
//   quant_static              clamp(rint(x * mult), lo, hi)
//
// == brevitas_models.fp32.quant_uint4_asym / quant_int8_sym / quant_static.
//
// LANES elements per cycle: two passes per row, the statistics (min and max fused into ONE pass with
// per-lane running values combined at the end, exact in any order; or the per-lane absmax), then the
// codes. Results do not depend on LANES (min keeps the documented -0 preference of f32_min).
// Partitioning (declared by the caller): x and q cyclic by LANES (last dimension).
#pragma once

#include "flexllm_math.h"
#include "flexllm_reduce.h"
#include "flexllm_types.h"

namespace flexllm {

// One row x[0 .. d-1] (d >= 1) -> uint4 codes (in uint8_t), scale, zero (= clip * min).
template <int MAX_D, int LANES = 1>
void quantize_uint4_asym_row(const float x[MAX_D], int d, uint8_t q[MAX_D], float &scale, float &zero,
                             float clip = 1.0f) {
    float mn, mx;
    row_min_max<MAX_D, LANES>(x, d, mn, mx);
    mn = mn * clip;             // clip == 1: the identity (signs and zeros kept)
    mx = mx * clip;
    float s = (mx - mn) / 15.0f;
    const bool guard = s < F32_MIN_NORMAL;
    if (guard) s = 1.0f;
    const float inv = 1.0f / s;
QUANT_UINT4:
    for (int c = 0; c * LANES < d; ++c) {
#pragma HLS LOOP_TRIPCOUNT max = (MAX_D + LANES - 1) / LANES
#pragma HLS PIPELINE II = 1
    FLEXLLM_COUNT("quant_uint4");
    QUANT_UINT4_LANES:
        for (int l = 0; l < LANES; ++l) {
#pragma HLS UNROLL
            const int k = c * LANES + l;
            if (k < d) q[k] = guard ? (uint8_t)0 : (uint8_t)round_clamp((x[k] - mn) * inv, 0, 15);
        }
    }
    scale = s;
    zero = mn;
}

// One row x[0 .. d-1] -> int8 codes, scale.
template <int MAX_D, int LANES = 1>
void quantize_int8_sym_row(const float x[MAX_D], int d, int8_t q[MAX_D], float &scale) {
    const float a = row_absmax<MAX_D, LANES>(x, d);
    float s = a / 128.0f;
    const bool guard = s < F32_MIN_NORMAL;
    if (guard) s = 1.0f;
    const float inv = 1.0f / s;
QUANT_INT8:
    for (int c = 0; c * LANES < d; ++c) {
#pragma HLS LOOP_TRIPCOUNT max = (MAX_D + LANES - 1) / LANES
#pragma HLS PIPELINE II = 1
    FLEXLLM_COUNT("quant_int8");
    QUANT_INT8_LANES:
        for (int l = 0; l < LANES; ++l) {
#pragma HLS UNROLL
            const int k = c * LANES + l;
            if (k < d) q[k] = guard ? (int8_t)0 : (int8_t)round_clamp(x[k] * inv, -128, 127);
        }
    }
    scale = s;
}

// Kind-generic row quantizer: token_quantizer<KIND>::row(x, d, q, scale, zero); zero = 0 for int8.
template <int KIND>
struct token_quantizer;

template <>
struct token_quantizer<INPUT_UINT4_ASYM> {
    template <int MAX_D, int LANES = 1>
    static void row(const float x[MAX_D], int d, uint8_t q[MAX_D], float &scale, float &zero,
                    float clip = 1.0f) {
#pragma HLS INLINE
        quantize_uint4_asym_row<MAX_D, LANES>(x, d, q, scale, zero, clip);
    }
};

template <>
struct token_quantizer<INPUT_INT8_SYM> {
    template <int MAX_D, int LANES = 1>
    static void row(const float x[MAX_D], int d, int8_t q[MAX_D], float &scale, float &zero,
                    float clip = 1.0f) {     // clip: uint4 only (symmetric int8 is never clipped)
#pragma HLS INLINE
        (void)clip;
        quantize_int8_sym_row<MAX_D, LANES>(x, d, q, scale);
        zero = 0.0f;
    }
};

// n_tokens rows of x [MAX_T][MAX_D] -> codes [MAX_T][MAX_D], scale [MAX_T], zero [MAX_T].
template <int MAX_T, int MAX_D, int KIND, int LANES = 1>
void quantize_tokens(const float x[MAX_T][MAX_D], int n_tokens, int d,
                     typename input_code<KIND>::type q[MAX_T][MAX_D], float scale[MAX_T],
                     float zero[MAX_T], float clip = 1.0f) {
QUANT_TOKENS:
    for (int t = 0; t < n_tokens; ++t) {
#pragma HLS LOOP_TRIPCOUNT max = MAX_T
        token_quantizer<KIND>::template row<MAX_D, LANES>(x[t], d, q[t], scale[t], zero[t], clip);
    }
}

// Static quantization with a precomputed fp32 multiplier: clamp(rint(x * mult), lo, hi).
inline int quant_static(float x, float mult, int lo, int hi) {
#pragma HLS INLINE
    return round_clamp(x * mult, lo, hi);
}

// x, q cyclic by LANES (caller).
template <int MAX_N, typename CODE_T, int LANES = 1>
void quant_static_row(const float x[MAX_N], int n, float mult, int lo, int hi, CODE_T q[MAX_N]) {
QUANT_STATIC:
    for (int c = 0; c * LANES < n; ++c) {
#pragma HLS LOOP_TRIPCOUNT max = (MAX_N + LANES - 1) / LANES
#pragma HLS PIPELINE II = 1
    FLEXLLM_COUNT("quant_static");
    QUANT_STATIC_LANES:
        for (int l = 0; l < LANES; ++l) {
#pragma HLS UNROLL
            const int k = c * LANES + l;
            if (k < n) q[k] = (CODE_T)quant_static(x[k], mult, lo, hi);
        }
    }
}

}  // namespace flexllm
