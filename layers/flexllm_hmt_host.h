// flexllm_hmt_host.h: the host side of HMT (hierarchical memory transformer): a long prompt as segments
// for the prefill kernel (used by the C-simulation testbench and the XRT host; plain C++17, no HLS).
//
// Segment n of a prompt cut into blocks of BLOCK tokens (the last block may be shorter) is one prefill
// kernel call with input rows [summary rows | main rows]; id -1 selects the summary token T, id -2 the
// recalled memory P_n (fp32 rows on chip, flexllm_embedding.h embedding_or_rows):
//
//   summary (n >= 1): [-1, block_n[0 .. SUMMARY-1], -1]
//   main:             [-2, block_{n-1}[-SENSORY:] (n >= 1), block_n, -2 (not on the last segment)]
//
// == brevitas_models.hmt.golden_segments.segment_layouts. The kernel recalls P_n over the first
// min(n, SLOTS) slots of the memory ring (n >= 1), runs both passes and, when push, stores the trailing
// P_n's state as memory n in slot n mod SLOTS with its key.
#pragma once

#include <cstdint>
#include <vector>

namespace flexllm {

constexpr int HMT_ROW_SUMMARY = -1;
constexpr int HMT_ROW_MEMORY = -2;

struct hmt_segment_rows {
    std::vector<int32_t> rows;  // summary rows then main rows
    int n_summary;              // 0 on segment 0
    int n_main;
    bool push;                  // not the last segment: the trailing state becomes a memory
};

inline std::vector<hmt_segment_rows> hmt_segments(const std::vector<int32_t> &prompt, int block, int summary,
                                                  int sensory) {
    std::vector<hmt_segment_rows> out;
    const int n = static_cast<int>(prompt.size());
    const int segments = (n + block - 1) / block;
    for (int s = 0; s < segments; ++s) {
        const int b0 = s * block;
        const int b1 = b0 + block < n ? b0 + block : n;
        const bool last = s == segments - 1;
        hmt_segment_rows seg;
        if (s > 0) {
            seg.rows.push_back(HMT_ROW_SUMMARY);
            for (int i = b0; i < b1 && i < b0 + summary; ++i) seg.rows.push_back(prompt[i]);
            seg.rows.push_back(HMT_ROW_SUMMARY);
        }
        seg.n_summary = static_cast<int>(seg.rows.size());
        seg.rows.push_back(HMT_ROW_MEMORY);
        if (s > 0 && sensory > 0) {
            const int p0 = b0 - sensory > b0 - block ? b0 - sensory : b0 - block;
            for (int i = p0; i < b0; ++i) seg.rows.push_back(prompt[i]);
        }
        for (int i = b0; i < b1; ++i) seg.rows.push_back(prompt[i]);
        if (!last) seg.rows.push_back(HMT_ROW_MEMORY);
        seg.n_main = static_cast<int>(seg.rows.size()) - seg.n_summary;
        seg.push = !last;
        out.push_back(seg);
    }
    return out;
}

}  // namespace flexllm
