"""The two U280 kernels of a project, generated from the two converted stage models.

Both call the stage pass the FlexLLM backend generates for hls4ml (``stage_pass`` in ``<stage>_core.h``:
a DATAFLOW region of one weight reader task per HBM port, a parameter reader task and the compute core that
runs the unit schedule over all layers; see ``backend/writer.py`` and ``templates/stage_core.h``) and add the
parts a stand-alone hls4ml stage does not have:

``<name>_prefill``  the prompt in chunks of ``MAX_TOKENS`` tokens (chunked prefill: each chunk attends
                    to the KV cache written by the previous ones), then samples the first new token.
``<name>_decode``   the whole token loop on chip: for ``n_new`` steps, one token through all layers and
                    the LM head, sampling (greedy, or top-k with the xorshift32 stream of
                    ``layers/flexllm_sampling.h``), and the sampled token fed back through the embedding.

Port order (the host and the testbench follow it): see :func:`prefill_ports` / :func:`decode_ports`.
"""

from __future__ import annotations

from typing import List

from ..backend.passes.templates import linear_lanes_of_config
from ..backend.writer import (core_header, kernel_header, kv_port_list, kv_port_names, maxi_pragma, namespace,
                              parameters_header, port_list, weight_ports)
from .spec import Port, kv_buffer

MAX_TOP_K = 64       # compile-time bound of the top-k sampler (run-time k <= MAX_TOP_K)


def _weight_ports(n) -> List[Port]:
    return [Port(f"w{i}", "m_axi", "flexllm::wide_word_t", bundle=f"gmem_w{i}", buffer=f"weights_p{i}",
                 width_bits=512) for i in range(n)]


def _kv_ports(n_kv_ports) -> List[Port]:
    """KV port i: read by its reader task through kv<i>, written by its writer task through kvw<i>; both
    arguments bound to buffer kv_p<i> (one m_axi argument per task, flexllm_kv_cache.h)."""
    reads = [Port(f"kv{i}", "m_axi", "flexllm::wide_word_t", bundle=f"gmem_kv{i}", buffer=kv_buffer(i), width_bits=512)
             for i in range(n_kv_ports)]
    writes = [Port(f"kvw{i}", "m_axi", "flexllm::wide_word_t", bundle=f"gmem_kvw{i}", buffer=kv_buffer(i),
                   width_bits=512, direction="out") for i in range(n_kv_ports)]
    return reads + writes


def _shared_ports(n_weight_ports, n_kv_ports, fmem_buffer, lmem_buffer) -> List[Port]:
    return _weight_ports(n_weight_ports) + [
        Port("lmem", "m_axi", "flexllm::wide_word_t", bundle="gmem_lmem", buffer=lmem_buffer, width_bits=512),
        Port("fmem", "m_axi", "float", bundle="gmem_fmem", buffer=fmem_buffer),
        Port("embed", "m_axi", "float", bundle="gmem_embed", buffer="embed"),
    ] + _kv_ports(n_kv_ports)


def _sampling_ports() -> List[Port]:
    return [Port("top_k", "scalar", "int"), Port("inv_temperature", "scalar", "float"),
            Port("seed", "scalar", "unsigned")]


def _hmt_ports() -> List[Port]:
    """HMT: the fp32 parameter image (T, P_0, W_q', W_k' [, W_p], brevitas_models/hmt/hardware.py) and the
    ring of memories and keys [2][SLOTS][HIDDEN] (read for the recall, one slot written per segment)."""
    return [Port("hmt_params", "m_axi", "float", bundle="gmem_hmt_params", buffer="hmt_params"),
            Port("hmt_ring", "m_axi", "float", bundle="gmem_hmt_ring", buffer="hmt_ring", direction="inout")]


HMT_SCALARS = ("n_summary", "hmt_segment", "hmt_push")


def prefill_ports(n_weight_ports, n_kv_ports, fmem_buffer, lmem_buffer="lmem", hmt=False) -> List[Port]:
    """With ``hmt``: one HMT segment per call (rows ``tokens[0 .. n_summary)`` the summary pass,
    ``tokens[n_summary .. n_summary + n_tokens)`` the main pass; layers/flexllm_hmt_host.h)."""
    hmt_scalars = [Port(n, "scalar", "int") for n in HMT_SCALARS] if hmt else []
    return ([Port("tokens", "m_axi", "int32_t", bundle="gmem_tokens", buffer="prompt_tokens"),
             Port("n_tokens", "scalar", "int")] + hmt_scalars
            + _shared_ports(n_weight_ports, n_kv_ports, fmem_buffer, lmem_buffer) + (_hmt_ports() if hmt else [])
            + [Port("logits", "m_axi", "float", bundle="gmem_logits", buffer="prefill_logits", direction="out"),
               Port("next_token", "m_axi", "int32_t", bundle="gmem_next_token", buffer="first_token",
                    direction="out")] + _sampling_ports())


def decode_ports(n_weight_ports, n_kv_ports, fmem_buffer, lmem_buffer="lmem") -> List[Port]:
    return ([Port("first_token", "scalar", "int"), Port("position", "scalar", "int"),
             Port("n_new", "scalar", "int")] + _shared_ports(n_weight_ports, n_kv_ports, fmem_buffer, lmem_buffer)
            + [Port("out_tokens", "m_axi", "int32_t", bundle="gmem_out_tokens", buffer="out_tokens",
                    direction="out"),
               Port("logits", "m_axi", "float", bundle="gmem_logits", buffer="decode_logits", direction="out")]
            + _sampling_ports())


def _signature(name, ports) -> str:
    args = []
    for p in ports:
        if p.kind == "scalar":
            args.append(f"{p.ctype} {p.name}")
        else:
            const = "const " if p.direction == "in" else ""
            args.append(f"{const}{p.ctype}* {p.name}")
    return f"void {name}(" + ",\n        ".join(args) + ")"


ELEMENT_BYTES = {"flexllm::wide_word_t": 64, "float": 4, "int32_t": 4, "int8_t": 1}


def _pragmas(ports, buffer_bytes) -> List[str]:
    """m_axi with depth (elements of the bound buffer), burst length and outstanding transactions in
    the port's direction(s); s_axilite for scalars and the return."""
    out = []
    for p in ports:
        if p.kind == "m_axi":
            depth = buffer_bytes.get(p.buffer, 64) // ELEMENT_BYTES[p.ctype]
            out.append(maxi_pragma(p.name, depth, bundle=p.bundle, read=p.direction != "out",
                                   write=p.direction != "in"))
        else:
            out.append(f"#pragma HLS INTERFACE s_axilite port={p.name}")
    out.append("#pragma HLS INTERFACE s_axilite port=return")
    return out


SAMPLER = """static int sample_token(const float logits[VOCAB], int top_k, float inv_temperature, uint32_t &state) {
    if (top_k <= 1) return flexllm::greedy_argmax<VOCAB, SAMPLER_LANES>(logits, VOCAB);
    return flexllm::sample_top_k<VOCAB, MAX_TOP_K>(logits, VOCAB, top_k < MAX_TOP_K ? top_k : MAX_TOP_K,
                                                  inv_temperature, state);
}"""


def _kernel_file(model, name, ports, buffer_bytes, top_body: List[str], extra_includes=(), extra_constants=()) -> str:
    stage = model.config.get_project_name()
    _, out_lanes, _ = linear_lanes_of_config(model)
    lines = [f"// {name}: FlexLLM U280 kernel (generated by flexllm build; do not edit)",
             f'#include "{stage}.h"', f'#include "{stage}_core.h"', '#include "flexllm/flexllm_sampling.h"',
             *extra_includes,
             "", f"using namespace {namespace(model)};", f"static const int MAX_TOP_K = {MAX_TOP_K};", *extra_constants,
             f"static const int SAMPLER_LANES = {out_lanes};  // logits banked like the engine's output rows", "",
             SAMPLER, "",
             _signature(name, ports) + " {", *_pragmas(ports, buffer_bytes),
             "    static float step_logits[VOCAB];",
             f"#pragma HLS ARRAY_PARTITION variable = step_logits cyclic factor = {out_lanes} dim = 1",
             "#pragma HLS BIND_STORAGE variable = step_logits type = ram_2p impl = bram",
             *top_body, "}", ""]
    return "\n".join(lines)


# the last pass's logits -> external memory (both kernels)
LOGITS_OUT = ["LOGITS_OUT:", "    for (int j = 0; j < VOCAB; ++j) {", "#pragma HLS PIPELINE II = 1",
              "        logits[j] = step_logits[j];", "    }"]


def _chunked_prefill(model, tokens: str, n: str, vector_args: str, label: str) -> List[str]:
    """One prefill pass over ``n`` rows of ``tokens`` in chunks (loop labels ``<label>_CHUNKS`` / ``_IDS``)."""
    return [
        "    // chunked prefill: MAX_TOKENS tokens per pass over all layers; later chunks attend to the",
        "    // KV-cache entries the earlier ones wrote; the last chunk also runs the LM head (tail)",
        f"{label}_CHUNKS:",
        f"    for (int c = 0; c < {n}; c += MAX_TOKENS) {{",
        f"#pragma HLS LOOP_TRIPCOUNT max = {MAX_CHUNKS_TRIPCOUNT}",
        f"        const int n = {n} - c < MAX_TOKENS ? {n} - c : MAX_TOKENS;",
        f"    {label}_IDS:",
        "        for (int t = 0; t < n; ++t) {",
        "#pragma HLS LOOP_TRIPCOUNT max = MAX_TOKENS",
        "#pragma HLS PIPELINE II = 1",
        f"            chunk_ids[t] = {tokens}[c + t];",
        "        }",
        f"        stage_pass(chunk_ids, n, c, c + n >= {n}, {port_list(model)}, lmem, fmem, embed, "
        f"{kv_port_list(model)}, step_logits{vector_args});",
        "    }",
    ]


def prefill_kernel(model, name, fmem_buffer, lmem_buffer="lmem", buffer_bytes=None, hmt=None) -> str:
    if hmt is not None:
        return hmt_prefill_kernel(model, name, fmem_buffer, lmem_buffer, buffer_bytes, hmt)
    ports = prefill_ports(weight_ports(model), len(kv_port_names(model)[0]), fmem_buffer, lmem_buffer)
    body = [
        "    static int32_t chunk_ids[MAX_TOKENS];",
        "    // chunked prefill: MAX_TOKENS tokens per pass over all layers; later chunks attend to the",
        "    // KV-cache entries the earlier ones wrote; the last chunk also runs the LM head (tail)",
        "PREFILL_CHUNKS:",
        "    for (int c = 0; c < n_tokens; c += MAX_TOKENS) {",
        f"#pragma HLS LOOP_TRIPCOUNT max = {MAX_CHUNKS_TRIPCOUNT}",
        "        const int n = n_tokens - c < MAX_TOKENS ? n_tokens - c : MAX_TOKENS;",
        "    CHUNK_IDS:",
        "        for (int t = 0; t < n; ++t) {",
        "#pragma HLS LOOP_TRIPCOUNT max = MAX_TOKENS",
        "#pragma HLS PIPELINE II = 1",
        "            chunk_ids[t] = tokens[c + t];",
        "        }",
        f"        stage_pass(chunk_ids, n, c, c + n >= n_tokens, {port_list(model)}, lmem, fmem, embed, "
        f"{kv_port_list(model)}, step_logits);",
        "    }",
        "    uint32_t state = seed ? seed : 1u;",
        "    next_token[0] = sample_token(step_logits, top_k, inv_temperature, state);",
        *LOGITS_OUT,
    ]
    return _kernel_file(model, name, ports, buffer_bytes or {}, body)


def hmt_constants(hmt) -> List[str]:
    off = hmt["offsets"]
    lines = [f"static const int HMT_SLOTS = {hmt['slots']};  // N: memories in the ring",
             f"static const int HMT_LANES = {hmt['lanes']};  // fp32 products per cycle of the recall unit",
             f"static const long long HMT_T_OFF = {off['summary_row']}, HMT_P0_OFF = {off['initial_row']};",
             f"static const long long HMT_WQ_OFF = {off['w_q']}, HMT_WK_OFF = {off['w_k']};"]
    if hmt["recall_projection"]:
        lines.append(f"static const long long HMT_WP_OFF = {off['w_p']};  // rotated backbone or recall scale: "
                     "P_n = W_p mix")
    return lines


def hmt_prefill_kernel(model, name, fmem_buffer, lmem_buffer, buffer_bytes, hmt) -> str:
    """The prefill kernel of an HMT project: one segment per call (summary pass, recall, main pass, key of
    the new memory), the same stage pass (one engine) for both passes."""
    ports = prefill_ports(weight_ports(model), len(kv_port_names(model)[0]), fmem_buffer, lmem_buffer, hmt=True)
    project_row = ("        flexllm::memory_gemv<HIDDEN, HIDDEN, HMT_LANES>(hmt_params + HMT_WP_OFF, mix, vec_rows[1]);"
                   if hmt["recall_projection"] else
                   "        for (int c = 0; c < HIDDEN; ++c) vec_rows[1][c] = mix[c];")
    body = [
        "    static int32_t chunk_ids[MAX_TOKENS];",
        "    static float vec_rows[VECTOR_ROWS][WIDTH];      // row 0: T, row 1: P_n (input ids -1, -2)",
        "    static float state[WIDTH];                      // final-RMSNorm output of a pass's last position",
        "    static float ring_mem[HMT_SLOTS * HIDDEN], ring_key[HMT_SLOTS * HIDDEN];",
        "#pragma HLS BIND_STORAGE variable = ring_mem type = ram_2p impl = uram",
        "#pragma HLS BIND_STORAGE variable = ring_key type = ram_2p impl = uram",
        "#pragma HLS ARRAY_PARTITION variable = ring_mem cyclic factor = HMT_LANES",
        "#pragma HLS ARRAY_PARTITION variable = ring_key cyclic factor = HMT_LANES",
        "    static float mix[HIDDEN], new_key[HIDDEN];",
        "HMT_SUMMARY_ROW:",
        "    for (int c = 0; c < HIDDEN; ++c) {",
        "#pragma HLS PIPELINE II = 1",
        "        FLEXLLM_COUNT(\"hmt_row_load\");",
        "        vec_rows[0][c] = hmt_params[HMT_T_OFF + c];",
        "    }",
        "    const int filled = hmt_segment < HMT_SLOTS ? hmt_segment : HMT_SLOTS;",
        "    if (filled > 0 && n_summary > 0) {",
        "        // summary pass [T, block[:j], T] -> S_n; recall over the filled slots of the ring",
        *["    " + line for line in _chunked_prefill(model, "tokens", "n_summary", ", vec_rows, state", "SUMMARY")],
        "        // one sequential burst per loop: hmt_ring is one m_axi bundle (one read channel), so memories",
        "        // and keys are read one after the other, one fp32 per cycle each",
        "    HMT_RING_LOAD_MEMORIES:",
        "        for (int e = 0; e < filled * HIDDEN; ++e) {",
        "#pragma HLS LOOP_TRIPCOUNT max = HMT_SLOTS * HIDDEN",
        "#pragma HLS PIPELINE II = 1",
        "            FLEXLLM_COUNT(\"hmt_ring_load\");",
        "            ring_mem[e] = hmt_ring[e];",
        "        }",
        "    HMT_RING_LOAD_KEYS:",
        "        for (int e = 0; e < filled * HIDDEN; ++e) {",
        "#pragma HLS LOOP_TRIPCOUNT max = HMT_SLOTS * HIDDEN",
        "#pragma HLS PIPELINE II = 1",
        "            FLEXLLM_COUNT(\"hmt_ring_load\");",
        "            ring_key[e] = hmt_ring[HMT_SLOTS * HIDDEN + e];",
        "        }",
        "        // the MemoryRecall layer (QONNX qonnx/hmt/model.onnx -> hls4ml FlexMemoryRecall -> its template)",
        "        " + hmt["recall_call"],
        project_row,
        *(["    HMT_RECALL_RESIDUAL:                         // HMT.RecallResidual: P_n = P_0 + recalled row",
           "        for (int c = 0; c < HIDDEN; ++c) {",
           "#pragma HLS PIPELINE II = 1",
           "            FLEXLLM_COUNT(\"hmt_row_load\");",
           "            vec_rows[1][c] = hmt_params[HMT_P0_OFF + c] + vec_rows[1][c];",
           "        }"] if hmt.get("recall_residual") else []),
        "    } else {",
        "    HMT_INITIAL_ROW:",
        "        for (int c = 0; c < HIDDEN; ++c) {",
        "#pragma HLS PIPELINE II = 1",
        "            FLEXLLM_COUNT(\"hmt_row_load\");",
        "            vec_rows[1][c] = hmt_params[HMT_P0_OFF + c];",
        "        }",
        "    }",
        "    // main pass [P_n, sensory, block, P_n]: the KV cache decode continues from (last segment)",
        "    const int32_t *main_rows = tokens + n_summary;",
        *_chunked_prefill(model, "main_rows", "n_tokens", ", vec_rows, state", "MAIN"),
        "    if (hmt_push) {",
        "        // memory n = the trailing P_n's state, its key computed once; slot n mod N",
        "        flexllm::memory_key<HIDDEN, HMT_LANES>(hmt_params + HMT_WK_OFF, state, new_key);",
        "        const long long slot = hmt_segment % HMT_SLOTS;",
        "    HMT_RING_STORE_MEMORY:",
        "        for (int c = 0; c < HIDDEN; ++c) {",
        "#pragma HLS PIPELINE II = 1",
        "            FLEXLLM_COUNT(\"hmt_ring_store\");",
        "            hmt_ring[slot * HIDDEN + c] = state[c];",
        "        }",
        "    HMT_RING_STORE_KEY:",
        "        for (int c = 0; c < HIDDEN; ++c) {",
        "#pragma HLS PIPELINE II = 1",
        "            FLEXLLM_COUNT(\"hmt_ring_store\");",
        "            hmt_ring[(HMT_SLOTS + slot) * HIDDEN + c] = new_key[c];",
        "        }",
        "    }",
        "    uint32_t rng = seed ? seed : 1u;",
        "    next_token[0] = sample_token(step_logits, top_k, inv_temperature, rng);",
        *LOGITS_OUT,
    ]
    return _kernel_file(model, name, ports, buffer_bytes or {}, body, extra_includes=['#include "flexllm/flexllm_memory_recall.h"'],
                        extra_constants=hmt_constants(hmt))


def decode_kernel(model, name, fmem_buffer, lmem_buffer="lmem", buffer_bytes=None) -> str:
    ports = decode_ports(weight_ports(model), len(kv_port_names(model)[0]), fmem_buffer, lmem_buffer)
    body = [
        "    int32_t ids[MAX_TOKENS] = {0};",
        "    int token = first_token;",
        "    uint32_t state = seed ? seed : 1u;",
        "    // the token loop on chip: embedding lookup of the new token, all layers, LM head, sampling",
        "DECODE_TOKENS:",
        "    for (int s = 0; s < n_new; ++s) {",
        "#pragma HLS LOOP_TRIPCOUNT max = MAX_CONTEXT",
        "        ids[0] = token;",
        f"        stage_pass(ids, 1, position + s, true, {port_list(model)}, lmem, fmem, embed, "
        f"{kv_port_list(model)}, step_logits);",
        "        token = sample_token(step_logits, top_k, inv_temperature, state);",
        "        out_tokens[s] = token;",
        "    }",
        *LOGITS_OUT,
    ]
    return _kernel_file(model, name, ports, buffer_bytes or {}, body)


MAX_CHUNKS_TRIPCOUNT = 32      # prompt chunks per prefill call (co-simulation / report tripcount only)


def stage_headers(model):
    """(header file name, text) pairs the kernel of this stage model includes."""
    stage = model.config.get_project_name()
    return [(f"{stage}.h", kernel_header(model)), (f"{stage}_parameters.h", parameters_header(model)),
            (f"{stage}_core.h", core_header(model))]
