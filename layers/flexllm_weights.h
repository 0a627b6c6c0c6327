// flexllm_weights.h: packed integer weight storage in external memory (HBM), wide multi-port layout.
//
// Codes (written by brevitas_models.packing.pack_weights_ports):
//   int8: one code per byte (two's complement), byte k = code k of the row.
//   int4: two codes per byte: byte k/2 holds code k (k even) in bits 3..0 and code k+1 in bits 7..4,
//         two's-complement nibbles; for odd d_in the last high nibble is 0.
// Words: memory is read in 512-bit words (wide_word_t, 64 bytes, one AXI beat of a 512-bit m_axi
//   port). Byte b of a row is byte b % 64 of the row's word b / 64, little-endian (byte 0 = bits
//   [7:0]), so code i of a word sits in bits [BITS*i + BITS-1 : BITS*i] (i < codes_per_word = 128
//   for int4, 64 for int8). Every row is padded with zero bytes to row_words = ceil(row_bytes / 64).
// Ports: a matrix of d_out rows is split over PORTS weight ports (HBM pseudo-channels) by output
//   row: row j lives in port j % PORTS at row slot j / PORTS (word offset slot * row_words inside
//   the port's slice). Every port's slice has rows_per_port = ceil(d_out / PORTS) slots (missing
//   rows, j >= d_out, are zero), so all slices have the same size slice_words = rows_per_port *
//   row_words and a matrix lives at the SAME word offset w_off in every port: port p's slice is
//   w[p] + w_off. Rows of a block of consecutive output rows come from consecutive slots of every
//   port, so each port streams its slice in one sequential burst.
#pragma once

#include <cstdint>

#include "ap_int.h"
#include "flexllm_types.h"

namespace flexllm {

typedef ap_uint<512> wide_word_t;  // one weight word = one beat of a 512-bit AXI port
constexpr int WORD_BYTES = 64;
constexpr int WORD_BITS = 8 * WORD_BYTES;

template <int BITS>
struct weight_format;

template <>
struct weight_format<4> {
    static constexpr int bits = 4;
    static constexpr int codes_per_byte = 2;
    static constexpr int codes_per_word = WORD_BYTES * 2;  // 128
    static constexpr int max_abs = 8;                      // -8 is storable (narrow weights use +-7)
};

template <>
struct weight_format<8> {
    static constexpr int bits = 8;
    static constexpr int codes_per_byte = 1;
    static constexpr int codes_per_word = WORD_BYTES;  // 64
    static constexpr int max_abs = 128;
};

// ---- sizes (bits = 4 or 8; valid both at compile time and at run time) ---------------------------

// Bytes of one packed row of d_in codes (without the word padding).
constexpr int weight_row_bytes(int d_in, int bits) { return bits == 4 ? (d_in + 1) / 2 : d_in; }

// 512-bit words of one padded row.
constexpr int weight_row_words(int d_in, int bits) { return ceil_div(weight_row_bytes(d_in, bits), WORD_BYTES); }

// Row slots of every port's slice: ceil(d_out / ports).
constexpr int weight_rows_per_port(int d_out, int ports) { return ceil_div(d_out, ports); }

// Words of every port's slice of a d_out x d_in matrix (same in every port).
constexpr long long weight_slice_words(int d_out, int d_in, int bits, int ports) {
    return (long long)weight_rows_per_port(d_out, ports) * weight_row_words(d_in, bits);
}

// Port and slot of output row j, and the word offset of row j inside its port's slice.
constexpr int weight_port_of_row(int j, int ports) { return j % ports; }
constexpr int weight_slot_of_row(int j, int ports) { return j / ports; }
constexpr long long weight_row_word_offset(int j, int d_in, int bits, int ports) {
    return (long long)weight_slot_of_row(j, ports) * weight_row_words(d_in, bits);
}

// ---- codes ---------------------------------------------------------------------------------------

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

// 64-bit lane l of a word (bits [64l+63 : 64l]). In hardware a constant bit select (wiring). The C
// simulation with FLEXLLM_FAST_CSIM defined (set by flexllm's own g++ builds, not by Vitis csim) reads
// the lane from the arbitrary-precision storage of the bundled ap_types directly instead of through a
// 512-bit shift: the same bits, several times faster. Without the macro the portable range() is used.
inline ap_uint<64> word_lane(const wide_word_t &word, int l) {
#pragma HLS INLINE
#if defined(FLEXLLM_FAST_CSIM) && !defined(__SYNTHESIS__)
    return ap_uint<64>(word.V.get_pVal(l));
#else
    return word.range(64 * l + 63, 64 * l);
#endif
}

// Code i of a 64-bit lane of a word (0 <= i < 64 / BITS), two's complement.
template <int BITS>
inline int8_t weight_code_of_lane(const ap_uint<64> &lane, int i) {
#pragma HLS INLINE
#if defined(FLEXLLM_FAST_CSIM) && !defined(__SYNTHESIS__)
    // same two's-complement field, extracted with native 64-bit shifts (C simulation speed only)
    return (int8_t)((int64_t)(lane.to_uint64() << (64 - BITS * (i + 1))) >> (64 - BITS));
#else
    const ap_int<BITS> v = lane.range(BITS * i + BITS - 1, BITS * i);
    return (int8_t)v.to_int();
#endif
}

// Code i (0 <= i < codes_per_word) of a word: bits [BITS*i + BITS-1 : BITS*i], two's complement.
// Extracted through the 64-bit lane holding it (cheap in C simulation; with i a constant after
// unrolling both selects are wiring in hardware).
template <int BITS>
inline int8_t weight_code_of_word(const wide_word_t &word, int i) {
#pragma HLS INLINE
    constexpr int CPL = 64 / BITS;  // codes per 64-bit lane
    const int l = i / CPL;
    const ap_uint<64> lane = word_lane(word, l);
    return weight_code_of_lane<BITS>(lane, i - l * CPL);
}

// All codes_per_word codes of a word (out[i] = code i): the unpack stage of the engines.
template <int BITS>
void weight_unpack_word(const wide_word_t &word, int8_t out[weight_format<BITS>::codes_per_word]) {
#pragma HLS INLINE
    constexpr int CPL = 64 / BITS;
UNPACK_LANES:
    for (int l = 0; l < WORD_BITS / 64; ++l) {
#pragma HLS UNROLL
        const ap_uint<64> lane = word_lane(word, l);
        for (int i = 0; i < CPL; ++i) {
#pragma HLS UNROLL
            out[l * CPL + i] = weight_code_of_lane<BITS>(lane, i);
        }
    }
}

}  // namespace flexllm
