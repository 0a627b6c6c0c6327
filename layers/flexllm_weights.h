// flexllm_weights.h: packed integer weight storage in external memory.
//
// Layout (written by brevitas_models.packing.pack_weights): row-major [d_out][row_bytes], rows
// contiguous, so a block of consecutive output rows is one contiguous burst.
//   int8: row_bytes = d_in, byte k = code k (two's complement).
//   int4: row_bytes = ceil(d_in / 2); byte k/2 holds code k (k even) in bits 3..0 and code k+1 in
//         bits 7..4, two's-complement nibbles; for odd d_in the last high nibble is 0.
#pragma once

#include <cstdint>

#include "flexllm_types.h"

namespace flexllm {

template <int BITS>
struct weight_format;

template <>
struct weight_format<4> {
    static constexpr int bits = 4;
    static constexpr int codes_per_byte = 2;
    static constexpr int max_abs = 8;  // -8 is representable (symmetric narrow weights use +-7)
    static int row_bytes(int d_in) {
#pragma HLS INLINE
        return (d_in + 1) >> 1;
    }
    static constexpr int max_row_bytes(int max_in) { return (max_in + 1) / 2; }
};

template <>
struct weight_format<8> {
    static constexpr int bits = 8;
    static constexpr int codes_per_byte = 1;
    static constexpr int max_abs = 128;
    static int row_bytes(int d_in) {
#pragma HLS INLINE
        return d_in;
    }
    static constexpr int max_row_bytes(int max_in) { return max_in; }
};

// Sign-extend the low / high nibble of a packed int4 byte.
// ((v ^ 8) - 8) maps the nibble 0..15 to -8..7 (two's complement).
inline int8_t int4_low(uint8_t b) {
#pragma HLS INLINE
    return (int8_t)(((b & 0xF) ^ 8) - 8);
}

inline int8_t int4_high(uint8_t b) {
#pragma HLS INLINE
    return (int8_t)(((b >> 4) ^ 8) - 8);
}

// Code c of byte b: c = 0 (low / only code) or 1 (high nibble of an int4 byte).
template <int BITS>
inline int8_t weight_code_of_byte(uint8_t b, int c);

template <>
inline int8_t weight_code_of_byte<4>(uint8_t b, int c) {
#pragma HLS INLINE
    return c == 0 ? int4_low(b) : int4_high(b);
}

template <>
inline int8_t weight_code_of_byte<8>(uint8_t b, int c) {
#pragma HLS INLINE
    (void)c;
    return (int8_t)b;
}

// Offset of row j in a packed matrix with d_in inputs.
template <int BITS>
inline long long weight_row_offset(int j, int d_in) {
#pragma HLS INLINE
    return (long long)j * weight_format<BITS>::row_bytes(d_in);
}

// Code w[j][k] read directly from packed memory (random access; engines stream rows instead).
template <int BITS>
inline int8_t weight_code(const uint8_t *w, int j, int k, int d_in) {
#pragma HLS INLINE
    const long long row = weight_row_offset<BITS>(j, d_in);
    if (BITS == 4) return weight_code_of_byte<BITS>(w[row + (k >> 1)], k & 1);
    return weight_code_of_byte<BITS>(w[row + k], 0);
}

// Unpack row j (d_in codes) into out[0 .. d_in-1] with one sequential burst over its bytes.
template <int BITS, int MAX_IN>
void unpack_weight_row(const uint8_t *w, int j, int d_in, int8_t out[MAX_IN]) {
    const long long base = weight_row_offset<BITS>(j, d_in);
    const int nbytes = weight_format<BITS>::row_bytes(d_in);
    constexpr int MAX_BYTES = weight_format<BITS>::max_row_bytes(MAX_IN);
    (void)MAX_BYTES;  // loop tripcount only
UNPACK_ROW:
    for (int b = 0; b < nbytes; ++b) {
#pragma HLS LOOP_TRIPCOUNT max = MAX_BYTES
#pragma HLS PIPELINE II = 1
        const uint8_t byte = w[base + b];
        for (int c = 0; c < weight_format<BITS>::codes_per_byte; ++c) {
#pragma HLS UNROLL
            const int k = b * weight_format<BITS>::codes_per_byte + c;
            if (k < d_in) out[k] = weight_code_of_byte<BITS>(byte, c);
        }
    }
}

}  // namespace flexllm
