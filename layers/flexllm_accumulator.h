// flexllm_accumulator.h: exact integer accumulators (ap_int) sized from the dot-product bound.
//
// A dot product of n terms a[k] * b[k] with |a| <= A_MAX, |b| <= B_MAX is bounded by
// n * A_MAX * B_MAX; a two's-complement accumulator of bit_length(bound) + 1 bits never overflows
// (brevitas_models.fp32.accumulator_bits). Examples: docs/numerics.md.
#pragma once

#include "ap_int.h"
#include "flexllm_types.h"

namespace flexllm {

// Exact accumulator of a dot product of n_max terms |a| <= a_max, |b| <= b_max.
template <unsigned long long N_MAX, unsigned long long A_MAX, unsigned long long B_MAX>
struct dot_accumulator {
    static constexpr unsigned long long bound = N_MAX * A_MAX * B_MAX;
    static constexpr int bits = signed_acc_bits(bound);
    typedef ap_int<bits> type;
};

// fp32 value of an accumulator: round to nearest even (exact for |a| <= 2^24).
template <int N>
inline float acc_to_f32(const ap_int<N> &a) {
#pragma HLS INLINE
    return (float)a.to_int64();
}

}  // namespace flexllm
