// flexllm_rope.h: rotary position embedding, rotate-half convention (HF Llama).
//
//   y[i] = (x[i] * cos[P][i]) + (rot(x)[i] * sin[P][i]),  rot(x) = [-x[d/2 .. d-1], x[0 .. d/2-1]]
//
// Tables cos/sin are [max_positions][head_dim] fp32 in external memory, indexed by the absolute
// position P. == brevitas_models.fp32.rope.
//
// LANES elements per cycle (each output is independent). Partitioning (declared by the caller):
// x, cos_row, sin_row, y cyclic by LANES. Lane l of a step reads x[i] and x[i +- hd/2]: with x
// cyclic by LANES these are at most two reads per bank per cycle (dual port), whatever hd / LANES.
// rope_load_tables reads LANES consecutive table words per cycle from each table pointer (the m_axi
// port must be at least 32 * LANES bits wide, e.g. by automatic port widening, to sustain it).
#pragma once

#include "flexllm_types.h"

namespace flexllm {

// Element i of the rotated head vector: (x[i] * cos[i]) + (rot(x)[i] * sin[i]), half = hd / 2.
template <int MAX_HD>
inline float rope_element(const float x[MAX_HD], const float cos_row[MAX_HD], const float sin_row[MAX_HD], int i,
                          int half) {
#pragma HLS INLINE
    const float rot = i < half ? -x[i + half] : x[i - half];
    return (x[i] * cos_row[i]) + (rot * sin_row[i]);
}

// One head vector of even length hd with table rows cos_row / sin_row. y must not alias x.
template <int MAX_HD, int LANES = 1>
void rope_apply(const float x[MAX_HD], const float cos_row[MAX_HD], const float sin_row[MAX_HD], int hd,
                float y[MAX_HD]) {
    const int half = hd >> 1;
ROPE:
    for (int c = 0; c * LANES < hd; ++c) {
#pragma HLS LOOP_TRIPCOUNT max = (MAX_HD + LANES - 1) / LANES
#pragma HLS PIPELINE II = 1
    FLEXLLM_COUNT("rope");
    ROPE_LANES:
        for (int l = 0; l < LANES; ++l) {
#pragma HLS UNROLL
            const int i = c * LANES + l;
            if (i < hd) {
                y[i] = rope_element<MAX_HD>(x, cos_row, sin_row, i, half);
            }
        }
    }
}

// Copy the table rows of position pos (burst reads from external memory).
template <int MAX_HD, int LANES = 1>
void rope_load_tables(const float *cos_table, const float *sin_table, int pos, int hd, float cos_row[MAX_HD],
                      float sin_row[MAX_HD]) {
    const long long base = (long long)pos * hd;
ROPE_LOAD:
    for (int c = 0; c * LANES < hd; ++c) {
#pragma HLS LOOP_TRIPCOUNT max = (MAX_HD + LANES - 1) / LANES
#pragma HLS PIPELINE II = 1
    FLEXLLM_COUNT("rope_load");
    ROPE_LOAD_LANES:
        for (int l = 0; l < LANES; ++l) {
#pragma HLS UNROLL
            const int i = c * LANES + l;
            if (i < hd) {
                cos_row[i] = cos_table[base + i];
                sin_row[i] = sin_table[base + i];
            }
        }
    }
}

// Head vector at absolute position pos, tables in external memory.
template <int MAX_HD, int LANES = 1>
void rope_at(const float x[MAX_HD], const float *cos_table, const float *sin_table, int pos, int hd,
             float y[MAX_HD]) {
    float c[MAX_HD], s[MAX_HD];
#pragma HLS ARRAY_PARTITION variable = c cyclic factor = LANES
#pragma HLS ARRAY_PARTITION variable = s cyclic factor = LANES
    rope_load_tables<MAX_HD, LANES>(cos_table, sin_table, pos, hd, c, s);
    rope_apply<MAX_HD, LANES>(x, c, s, hd, y);
}

}  // namespace flexllm
