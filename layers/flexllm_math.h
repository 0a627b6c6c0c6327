// flexllm_math.h: scalar fp32 primitives of the numerics contract, usable in Vitis HLS and in C
// simulation (g++ -ffp-contract=off -fno-fast-math).
//
// Every function is one (or a fixed sequence of) IEEE binary32 operation(s) with round to nearest
// even. The hls4ml-bundled hls_math.h has no sqrt/log and only fixed-point exp, so the C-simulation
// path uses <cmath> and the synthesis path (__SYNTHESIS__) uses Vitis' <hls_math.h>.
#pragma once

#include <cmath>
#include <cstdint>

#ifdef __SYNTHESIS__
#include <hls_math.h>
#endif

namespace flexllm {

// Smallest normal binary32 (2^-126): the quantization-scale guard threshold.
static const float F32_MIN_NORMAL = 1.17549435082228750797e-38f;
// 2^-24: maps a 24-bit integer to [0, 1) exactly.
static const float F32_TWO_M24 = 5.9604644775390625e-08f;

// Raw bits of a binary32 and back (a union is the HLS-supported way to reinterpret).
inline uint32_t f32_bits(float x) {
    union {
        float f;
        uint32_t u;
    } c;
    c.f = x;
    return c.u;
}

inline float f32_from_bits(uint32_t u) {
    union {
        float f;
        uint32_t u;
    } c;
    c.u = u;
    return c.f;
}

inline bool f32_signbit(float x) { return (f32_bits(x) >> 31) != 0; }

inline float f32_abs(float x) { return f32_from_bits(f32_bits(x) & 0x7fffffffu); }

// max / min of two floats. Equal values (including +0 == -0) keep the FIRST argument, except that
// f32_min prefers -0 over +0 and f32_max prefers +0 over -0, which makes row min/max independent of
// the element order (the sign of a zero min is the only observable difference; see numerics.md).
inline float f32_max(float a, float b) {
    return (b > a || (b == a && !f32_signbit(b))) ? b : a;
}

inline float f32_min(float a, float b) {
    return (b < a || (b == a && f32_signbit(b))) ? b : a;
}

// Correctly rounded binary32 square root.
inline float f32_sqrt(float x) {
#ifdef __SYNTHESIS__
    return hls::sqrt(x);
#else
    return std::sqrt(x);
#endif
}

// exp32(x) = float(exp(double(x))): exp in binary64, one rounding to binary32.
// Overflow gives +inf, underflow +0.
// OPEN POINT (hardware path): the contract value is the correctly rounded binary32 exp of x (the
// binary64 exp is accurate enough that its one rounding to float gives it on every tested sample).
// The __SYNTHESIS__ branch below still goes through hls::exp on double, which is neither exactly
// rounded nor cheap (a double-precision core per lane in the vectorised softmax / SiLU). A hardware
// implementation must deliver exactly that rounded value (e.g. an fp32 range reduction with a
// table and enough guard bits, proven against the contract on all 2^32 inputs); a plain
// hls::expf would break bit-exactness with the C simulation. Not done yet.
inline float exp32(float x) {
#ifdef __SYNTHESIS__
    return (float)hls::exp((double)x);
#else
    return (float)std::exp((double)x);
#endif
}

// Round to the nearest integer, ties to even, with two binary32 additions (no library call):
// for |x| < 2^23, (|x| + 2^23) - 2^23 rounds |x| to an integer in the current (nearest-even) mode;
// |x| >= 2^23 is already an integer. The sign is restored afterwards (so -0.3 -> -0, as rint).
inline float rint_even_arith(float x) {
    const float two23 = 8388608.0f;
    float a = f32_abs(x);
    if (!(a < two23)) return x;  // integral, inf or NaN
    float r = (a + two23) - two23;
    return f32_signbit(x) ? -r : r;
}

// rint with ties to even (C nearbyint in the default rounding mode == numpy.rint).
inline float rint_even(float x) {
#ifdef __SYNTHESIS__
    return rint_even_arith(x);
#else
    return std::nearbyint(x);
#endif
}

// clamp(rint(v), lo, hi) as an integer; +-inf saturate (NaN gives lo; inputs are finite by contract).
inline int round_clamp(float v, int lo, int hi) {
    float r = rint_even(v);
    if (!(r >= (float)lo)) return lo;
    if (r > (float)hi) return hi;
    return (int)r;
}

}  // namespace flexllm
