// flexllm_token_quant.h: per-token dynamic quantization of linear inputs and static quantization.
//
//   quantize_uint4_asym_row   mn = clip * min x, mx = clip * max x (clip in (0, 1], default 1: exact
//                             min and max), s = (mx - mn) / 15, inv = 1 / s,
//                             q = clamp(rint((x - mn) * inv), 0, 15); zero = mn
//                             (clip < 1: values outside [mn, mx] saturate at code 0 or 15)
//   quantize_int8_sym_row     a = max |x|, s = a / 128, inv = 1 / s, q = clamp(rint(x * inv), -128, 127)
//   guard (both)              s < 2^-126  ->  s = 1, q = 0
//   quantize_row_per_call     either of the two, chosen by the run-time kind of the call (the quantizer of
//                             a per-call engine, INPUT_PER_CALL): ONE statistics pass (min and max; the
//                             int8 absmax is max(|min|, |max|), the same value as max |x|) and ONE code
//                             loop, q = clamp(rint((x - off) * inv), lo, hi) with off = mn, [0, 15] for
//                             uint4 and off = 0 (x - 0 == x exactly), [-128, 127] for int8: the int8 path
//                             adds a select per lane, not a second set of rounding lanes
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

// One row x[0 .. d-1] (d >= 1) quantized as the call's kind (INPUT_UINT4_ASYM with clip, or INPUT_INT8_SYM;
// clip ignored) into int8_t codes (uint4 codes 0..15), scale, zero (uint4: clip * min; int8: 0).
template <int MAX_D, int LANES = 1>
void quantize_row_per_call(const float x[MAX_D], int d, int call_kind, float clip, int8_t q[MAX_D], float &scale,
                           float &zero) {
    float mn, mx;
    row_min_max<MAX_D, LANES>(x, d, mn, mx);
    const bool u4 = call_kind == INPUT_UINT4_ASYM;
    const float c = u4 ? clip : 1.0f;   // int8 is never clipped; c == 1: the identity
    mn = mn * c;
    mx = mx * c;
    float s = u4 ? (mx - mn) / 15.0f : f32_max(f32_abs(mn), f32_abs(mx)) / 128.0f;
    const float off = u4 ? mn : 0.0f;
    const int lo = u4 ? 0 : -128, hi = u4 ? 15 : 127;
    const bool guard = s < F32_MIN_NORMAL;
    if (guard) s = 1.0f;
    const float inv = 1.0f / s;
QUANT_CODES:
    for (int c = 0; c * LANES < d; ++c) {
#pragma HLS LOOP_TRIPCOUNT max = (MAX_D + LANES - 1) / LANES
#pragma HLS PIPELINE II = 1
    FLEXLLM_COUNT("quant_codes");
    QUANT_CODES_LANES:
        for (int l = 0; l < LANES; ++l) {
#pragma HLS UNROLL
            const int k = c * LANES + l;
            if (k < d) q[k] = guard ? (int8_t)0 : (int8_t)round_clamp((x[k] - off) * inv, lo, hi);
        }
    }
    scale = s;
    zero = u4 ? mn : 0.0f;
}

// Kind-generic row quantizer: token_quantizer<KIND>::row(x, d, q, scale, zero, clip, call_kind); zero = 0 for
// int8. call_kind is the kind of the call: it must be KIND for the fixed-kind engines (and is ignored there).
template <int KIND>
struct token_quantizer;

template <>
struct token_quantizer<INPUT_UINT4_ASYM> {
    template <int MAX_D, int LANES = 1>
    static void row(const float x[MAX_D], int d, uint8_t q[MAX_D], float &scale, float &zero,
                    float clip = 1.0f, int call_kind = INPUT_UINT4_ASYM) {
#pragma HLS INLINE
        (void)call_kind;
        quantize_uint4_asym_row<MAX_D, LANES>(x, d, q, scale, zero, clip);
    }
};

template <>
struct token_quantizer<INPUT_INT8_SYM> {
    template <int MAX_D, int LANES = 1>
    static void row(const float x[MAX_D], int d, int8_t q[MAX_D], float &scale, float &zero,
                    float clip = 1.0f, int call_kind = INPUT_INT8_SYM) {  // clip: uint4 only
#pragma HLS INLINE
        (void)clip, (void)call_kind;
        quantize_int8_sym_row<MAX_D, LANES>(x, d, q, scale);
        zero = 0.0f;
    }
};

template <>
struct token_quantizer<INPUT_PER_CALL> {
    template <int MAX_D, int LANES = 1>
    static void row(const float x[MAX_D], int d, int8_t q[MAX_D], float &scale, float &zero, float clip,
                    int call_kind) {
#pragma HLS INLINE
        quantize_row_per_call<MAX_D, LANES>(x, d, call_kind, clip, q, scale, zero);
    }
};

// n_tokens rows of x [MAX_T][MAX_D] -> codes [MAX_T][MAX_D], scale [MAX_T], zero [MAX_T]. call_kind: the
// kind of this call (a per-call quantizer, KIND == INPUT_PER_CALL, needs it; the others ignore it).
template <int MAX_T, int MAX_D, int KIND, int LANES = 1>
void quantize_tokens(const float x[MAX_T][MAX_D], int n_tokens, int d,
                     typename input_code<KIND>::type q[MAX_T][MAX_D], float scale[MAX_T],
                     float zero[MAX_T], float clip = 1.0f, int call_kind = KIND) {
QUANT_TOKENS:
    for (int t = 0; t < n_tokens; ++t) {
#pragma HLS LOOP_TRIPCOUNT max = MAX_T
        token_quantizer<KIND>::template row<MAX_D, LANES>(x[t], d, q[t], scale[t], zero[t], clip, call_kind);
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
