// flexllm_embedding.h: token embedding lookup from a [vocab][d] fp32 table in external memory.
#pragma once

#include "flexllm_types.h"

namespace flexllm {

// row[k] = table[token][k], k < d (one burst).
template <int MAX_D>
void embedding_row(const float *table, int token, int d, float row[MAX_D]) {
    const long long base = (long long)token * d;
EMBEDDING_ROW:
    for (int k = 0; k < d; ++k) {
#pragma HLS LOOP_TRIPCOUNT max = MAX_D
#pragma HLS PIPELINE II = 1
        FLEXLLM_COUNT("embedding_row");
        row[k] = table[base + k];
    }
}

// x[t] = table[ids[t]] for t < n_tokens.
template <int MAX_T, int MAX_D>
void embedding(const float *table, const int ids[MAX_T], int n_tokens, int d, float x[MAX_T][MAX_D]) {
EMBEDDING_TOKENS:
    for (int t = 0; t < n_tokens; ++t) {
#pragma HLS LOOP_TRIPCOUNT max = MAX_T
        embedding_row<MAX_D>(table, ids[t], d, x[t]);
    }
}

// x[t] = table[ids[t]] for ids[t] >= 0, else the vector row rows[-1 - ids[t]] (HMT: id -1 is the summary
// token T, -2 the recalled memory P_n, both fp32 rows computed or loaded on chip; flexllm_hmt_host.h).
template <int MAX_T, int MAX_D, int ROWS>
void embedding_or_rows(const float *table, const int ids[MAX_T], int n_tokens, int d, const float rows[ROWS][MAX_D],
                       float x[MAX_T][MAX_D]) {
EMBEDDING_OR_ROWS_TOKENS:
    for (int t = 0; t < n_tokens; ++t) {
#pragma HLS LOOP_TRIPCOUNT max = MAX_T
        const int id = ids[t];
        if (id >= 0) {
            embedding_row<MAX_D>(table, id, d, x[t]);
        } else {
        EMBEDDING_VECTOR_ROW:
            for (int k = 0; k < d; ++k) {
#pragma HLS LOOP_TRIPCOUNT max = MAX_D
#pragma HLS PIPELINE II = 1
                FLEXLLM_COUNT("embedding_row");
                x[t][k] = rows[-1 - id][k];
            }
        }
    }
}

}  // namespace flexllm
