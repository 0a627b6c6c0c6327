// flexllm_types.h: data formats, input-code kinds and compile-time size helpers.
//
// Data types of the numerics contract (docs/numerics.md):
//   float      IEEE-754 binary32 activations, scales, tables
//   uint8_t    uint4 asymmetric input codes (0..15), uint8 softmax codes (0..255)
//   int8_t     int8 symmetric input codes, int4/int8 weight codes, int8 Q/K/V codes
//   ap_int<N>  exact integer accumulators (flexllm_accumulator.h)
#pragma once

#include <cstdint>

#include "flexllm_counters.h"

namespace flexllm {

// Per-token dynamic quantization of a linear layer's input row.
enum input_quant_kind {
    INPUT_UINT4_ASYM = 0,  // q in [0, 15], scale = (max - min) / 15, zero = min
    INPUT_INT8_SYM = 1,    // q in [-128, 127], scale = absmax / 128
    // Engine kind only (never the kind of a call): the kind comes with each call (unit_call.kind,
    // flexllm_schedule.h), uint4_asym or int8; int8 calls run as two 4-bit nibble passes on the same
    // 4-bit MAC datapath (flexllm_linear.h). Codes are stored as int8_t (uint4 codes 0..15 fit).
    INPUT_PER_CALL = 2
};

constexpr int ceil_div(int a, int b) { return (a + b - 1) / b; }

constexpr int min_int(int a, int b) { return a < b ? a : b; }

constexpr int max_int(int a, int b) { return a > b ? a : b; }

constexpr int gcd_int(int a, int b) { return b == 0 ? a : gcd_int(b, a % b); }

// Number of bits of the unsigned value v (0 -> 0). Compile-time only.
constexpr int bit_length(unsigned long long v) {
    int n = 0;
    while (v != 0) {
        v >>= 1;
        ++n;
    }
    return n;
}

// Bits of a two's-complement accumulator holding every value in [-bound, bound]
// (same definition as brevitas_models.fp32.accumulator_bits).
constexpr int signed_acc_bits(unsigned long long bound) { return bit_length(bound) + 1; }

// Largest power of two <= n (n >= 1); log2 of a power of two. Compile-time only.
constexpr int log2_floor(unsigned long long n) { return bit_length(n) - 1; }

// Code type and range of each input quantization kind.
template <int KIND>
struct input_code;

template <>
struct input_code<INPUT_UINT4_ASYM> {
    typedef uint8_t type;
    static constexpr int lo = 0;
    static constexpr int hi = 15;
    static constexpr int max_abs = 15;  // max |code|
    static constexpr bool has_zero = true;
};

template <>
struct input_code<INPUT_INT8_SYM> {
    typedef int8_t type;
    static constexpr int lo = -128;
    static constexpr int hi = 127;
    static constexpr int max_abs = 128;
    static constexpr bool has_zero = false;
};

// A per-call engine's code buffer holds either kind's codes; the bound is the wider (int8) one. Whether
// a call adds the zero-point correction is the call's kind (call_has_zero).
template <>
struct input_code<INPUT_PER_CALL> {
    typedef int8_t type;
    static constexpr int lo = -128;
    static constexpr int hi = 127;
    static constexpr int max_abs = 128;
    static constexpr bool has_zero = true;
};

// Whether a call of run-time kind `call_kind` on an engine of kind KIND has a zero point (uint4_asym).
template <int KIND>
inline bool call_has_zero(int call_kind) {
#pragma HLS INLINE
    return KIND == INPUT_PER_CALL ? call_kind == INPUT_UINT4_ASYM : input_code<KIND>::has_zero;
}

}  // namespace flexllm
