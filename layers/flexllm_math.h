// flexllm_math.h: scalar fp32 primitives of the numerics contract, usable in Vitis HLS and in C
// simulation (g++ -ffp-contract=off -fno-fast-math).
//
// Every function is one (or a fixed sequence of) IEEE binary32 operation(s) with round to nearest
// even. The hls4ml-bundled hls_math.h has no sqrt, so the C-simulation path uses <cmath> for the
// correctly rounded sqrt and the synthesis path (__SYNTHESIS__) Vitis' <hls_math.h>; exp32 is plain
// binary32 arithmetic in both.
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

// exp32(x): the contract's exponential, a fixed sequence of binary32 operations (no double anywhere, the
// same in C simulation and hardware; == brevitas_models.fp32.exp32 bit for bit, within 2 ulp of the
// correctly rounded exp on every tested input):
//   NaN -> NaN;  x > 88.72283 -> +inf;  x < -103.97208 -> +0;  otherwise
//   k = rint(x * log2(e));  r = (x - k * C1) - k * C2        (Cody-Waite: C1 = 0.693359375, 9 bits, so
//                                                             k * C1 is exact; C2 = -2.12194440e-4)
//   t = P5;  t = t * r + P4; ... t = t * r + P0;  p = ((t * (r * r)) + r) + 1     (degree-7 polynomial)
//   h = trunc(k / 2);  y = (p * 2^(k - h)) * 2^h             (two exact powers of two: both normal for
//                                                             every k, so subnormal results round once)
inline float pow2_int(int e) {
#pragma HLS INLINE
    return f32_from_bits((uint32_t)(e + 127) << 23);
}

inline float exp32(float x) {
    if (x != x) return x;
    if (x > 88.72283f) return INFINITY;
    if (x < -103.97208f) return 0.0f;
    const float k = rint_even(x * 1.44269504088896341f);
    const float r = (x - k * 0.693359375f) - k * -2.12194440e-4f;
    float t = 1.9875691500e-4f;
    t = t * r + 1.3981999507e-3f;
    t = t * r + 8.3334519073e-3f;
    t = t * r + 4.1665795894e-2f;
    t = t * r + 1.6666665459e-1f;
    t = t * r + 5.0000001201e-1f;
    const float p = ((t * (r * r)) + r) + 1.0f;
    const int ki = (int)k;
    const int h = ki / 2;
    return (p * pow2_int(ki - h)) * pow2_int(h);
}

}  // namespace flexllm
