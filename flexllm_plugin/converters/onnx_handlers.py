"""One hls4ml ONNX handler per fused flexllm op (see ``flexllm_plugin.frontend`` for the ops).

hls4ml dispatches on ``node.op_type`` only; each handler returns the layer dictionary of the
matching class in :mod:`flexllm_plugin.backend.layers`. Initialiser inputs (weights, tables) are
read here and stored as numpy attributes; only dynamic tensors become layer inputs.
"""

from __future__ import annotations

import numpy as np
from onnx import helper, numpy_helper

from brevitas_models.hadamard import hadamard_factor, small_hadamard


class HandlerError(ValueError):
    """A fused node whose constants or shapes the FlexLLM backend cannot implement."""


def _fail(node, msg):
    raise HandlerError(f"node '{node.name}' (op {node.op_type}): {msg}")


def _attrs(node):
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _init(graph, name, node):
    for init in graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    for other in graph.node:
        if other.op_type == "Constant" and name in other.output:
            return numpy_helper.to_array(other.attribute[0].t)
    _fail(node, f"input '{name}' must be a constant initialiser")


def _shape(graph, name):
    for vi in list(graph.value_info) + list(graph.input) + list(graph.output):
        if vi.name == name:
            return [d.dim_value for d in vi.type.tensor_type.shape.dim]
    for init in graph.initializer:
        if init.name == name:
            return list(init.dims)
    return None


def _need_shape(graph, node, name):
    shape = _shape(graph, name)
    if not shape or any(d <= 0 for d in shape):
        _fail(node, f"no static shape for tensor '{name}' (run qonnx InferShapes / flexllm fuse_llama first)")
    return shape


def _base(node, class_name, inputs, **attrs):
    return {"name": node.name, "class_name": class_name, "inputs": list(inputs),
            "outputs": list(node.output), **attrs}


def _str(v):
    return v.decode() if isinstance(v, bytes) else str(v)


def parse_embedding(node, input_names, input_shapes, graph):
    table = _init(graph, node.input[1], node).astype(np.float32)
    ids = _need_shape(graph, node, node.input[0])
    return _base(node, "FlexEmbedding", [input_names[0]], n_tokens=int(ids[-1]),
                 vocab_size=int(table.shape[0]), n_out=int(table.shape[1]), table=table)


def parse_rmsnorm(node, input_names, input_shapes, graph):
    x = _need_shape(graph, node, node.input[0])
    w = _init(graph, node.input[1], node).astype(np.float32).reshape(-1)
    if w.shape[0] != x[-1]:
        _fail(node, f"norm weight of {w.shape[0]} elements for rows of {x[-1]}")
    return _base(node, "FlexRMSNorm", [input_names[0]], n_tokens=int(np.prod(x[:-1])), n_in=int(x[-1]),
                 eps=float(_attrs(node)["eps"]), weight=w)


def parse_token_quant(node, input_names, input_shapes, graph):
    x = _need_shape(graph, node, node.input[0])
    a = _attrs(node)
    kind = _str(a["kind"])
    expected = {"uint4_asym": (4, 0), "int8": (8, 1)}
    if kind not in expected or (int(a.get("bit_width", 0)), int(a.get("signed", -1))) != expected[kind]:
        _fail(node, f"token quantization kind={kind!r} bit_width={a.get('bit_width')} signed={a.get('signed')} "
                    "is not one of the hardware kinds uint4_asym (4 bit unsigned) / int8 (8 bit signed)")
    clip = float(a.get("clip", 1.0))
    if not 0.0 < clip <= 1.0 or (clip != 1.0 and kind != "uint4_asym"):
        _fail(node, f"token quantization clip ratio {clip} (need (0, 1], uint4_asym inputs only)")
    return _base(node, "FlexTokenQuant", [input_names[0]], n_tokens=int(np.prod(x[:-1])), n_in=int(x[-1]),
                 kind=kind, clip=clip)


def _producer(graph, name):
    for n in graph.node:
        if name in n.output:
            return n
    return None


def parse_quant_linear(node, input_names, input_shapes, graph):
    x = _need_shape(graph, node, node.input[0])
    a = _attrs(node)
    bits, narrow = int(a["w_bits"]), int(a.get("narrow", 1))
    src = _producer(graph, node.input[0])
    if src is None or src.op_type != "DynamicTokenQuant":
        _fail(node, "the input of a QuantLinear must come from a DynamicTokenQuant node")
    kind = _str(_attrs(src)["kind"])
    w = _init(graph, node.input[1], node).astype(np.float32)
    s = _init(graph, node.input[2], node).astype(np.float32).reshape(-1)
    if bits not in (4, 8):
        _fail(node, f"weight bit width {bits} (the linear engine stores int4 or int8)")
    if s.shape[0] != w.shape[0] or not np.all(s > 0):
        _fail(node, "weight scale must be positive, one per output channel")
    qmax = 2 ** (bits - 1) - 1
    qmin = -qmax if narrow else -qmax - 1
    w_int = np.clip(np.rint(w / s[:, None]), qmin, qmax).astype(np.int8)
    return _base(node, "FlexQuantLinear", [input_names[0]], n_tokens=int(np.prod(x[:-1])),
                 n_in=int(w.shape[1]), n_out=int(w.shape[0]), weight_bits=bits, input_kind=kind,
                 w_int=w_int, w_scale=s)


def parse_split_heads(node, input_names, input_shapes, graph):
    x = _need_shape(graph, node, node.input[0])        # [1, L, heads*d]
    a = _attrs(node)
    heads, dim = int(a["num_heads"]), int(a["head_dim"])
    if x[-1] != heads * dim:
        _fail(node, f"{x[-1]} columns are not {heads} heads x {dim}")
    return _base(node, "FlexSplitHeads", [input_names[0]], n_tokens=int(x[-2]), heads=heads, head_dim=dim)


def parse_rope(node, input_names, input_shapes, graph):
    x = _need_shape(graph, node, node.input[0])        # [1, heads, L, d]
    cos = _init(graph, node.input[1], node).astype(np.float32)
    sin = _init(graph, node.input[2], node).astype(np.float32)
    if len(x) != 4 or cos.shape != sin.shape or cos.shape[-1] != x[-1] or x[-1] % 2:
        _fail(node, f"unexpected RoPE shapes x={x} cos={cos.shape}")
    has_pos = len(node.input) > 3 and node.input[3] != ""
    inputs = [input_names[0]] + ([input_names[3]] if has_pos else [])
    return _base(node, "FlexRoPE", inputs, n_tokens=int(x[2]), heads=int(x[1]), head_dim=int(x[3]),
                 cos=cos.reshape(-1, x[3]), sin=sin.reshape(-1, x[3]), has_position=has_pos)


def parse_attention(node, input_names, input_shapes, graph):
    q = _need_shape(graph, node, node.input[0])        # [1, H, L, d]
    k = _need_shape(graph, node, node.input[1])        # [1, KVH, L, d]
    a = _attrs(node)
    past = 0
    if len(node.input) >= 5 and node.input[3]:
        past = int(_need_shape(graph, node, node.input[3])[2])
    for key in ("qkv_bits", "p_bits"):
        if int(a.get(key, 8)) != 8:
            _fail(node, f"{key}={a[key]}: the attention unit is int8 Q/K/V and uint8 P")
    if not int(a.get("causal", 1)) and int(q[2]) > 1:
        # one new token attends to every cached key and itself: unmasked == causal
        _fail(node, "non-causal attention over several new tokens is not supported (the unit is causal)")
    h, kvh, d = int(q[1]), int(k[1]), int(q[3])
    missing = [n for n in ("s_q", "s_k", "s_v", "s_p") if n not in a or len(a[n]) == 0]
    if missing:
        _fail(node, f"no static scales {missing}: the attention unit needs int8 per-head Q/K/V and uint8 P "
                    "quantization (a preset with qkv_bits=8 and softmax_bits=8, e.g. flexllm-w4a4)")
    scales = {n: np.asarray(a[n], dtype=np.float32).reshape(-1) for n in ("s_q", "s_k", "s_v", "s_p")}
    for n, want in (("s_q", h), ("s_k", kvh), ("s_v", kvh), ("s_p", h)):
        if scales[n].shape[0] != want or not np.all(scales[n] > 0):
            _fail(node, f"{n} needs {want} positive per-head scales, got {scales[n]}")
    return _base(node, "FlexAttention", list(input_names[:3]) + [i for i in input_names[3:5] if i],
                 n_tokens=int(q[2]), heads=h, kv_heads=kvh, head_dim=d, past_len=past, cache_index=-1,
                 softmax_scale=float(a["softmax_scale"]), **scales)


def _elementwise(class_name):
    def parse(node, input_names, input_shapes, graph):
        x = _need_shape(graph, node, node.input[0])
        for other in node.input[1:]:
            if _need_shape(graph, node, other) != x:
                _fail(node, f"inputs must have equal shapes, got {x} and {_shape(graph, other)}")
        return _base(node, class_name, list(input_names), n_tokens=int(np.prod(x[:-1])), n_in=int(x[-1]))
    return parse


def parse_hadamard(node, input_names, input_shapes, graph):
    x = _need_shape(graph, node, node.input[0])
    n = int(x[-1])
    m, _ = hadamard_factor(n)
    return _base(node, "FlexHadamard", [input_names[0]], n_tokens=int(np.prod(x[:-1])), n_in=n, m=int(m),
                 signs=small_hadamard(m).astype(np.int8))


def parse_last_token(node, input_names, input_shapes, graph):
    x = _need_shape(graph, node, node.input[0])
    return _base(node, "FlexLastToken", [input_names[0]], n_tokens=int(x[-2]), n_in=int(x[-1]))


MEMORY_RECALL_LANES = 16     # fp32 products per cycle: one 512-bit HBM word of W_q


def parse_memory_recall(node, input_names, input_shapes, graph):
    """HMT ``MemoryRecall(summary, w_q, keys, memories, filled)``: W_q a constant [d, d]; keys and memories
    [N, d] (the ring); summary [1, d]."""
    w_q = _init(graph, node.input[1], node).astype(np.float32)
    keys = _need_shape(graph, node, node.input[2])
    mems = _need_shape(graph, node, node.input[3])
    summary = _need_shape(graph, node, node.input[0])
    d = int(w_q.shape[0])
    if w_q.shape != (d, d) or list(keys) != list(mems) or keys[-1] != d or summary[-1] != d:
        _fail(node, f"W_q {list(w_q.shape)}, keys {keys}, memories {mems}, summary {summary}: need [d, d], "
                    "[N, d], [N, d], [1, d]")
    dynamic = [input_names[i] for i in (0, 2, 3, 4)]
    return _base(node, "FlexMemoryRecall", dynamic, n_tokens=1, slots=int(keys[0]), hidden=d, w_q=w_q,
                 lanes=MEMORY_RECALL_LANES)


ONNX_HANDLERS = {
    "Embedding": parse_embedding,
    "RMSNorm": parse_rmsnorm,
    "DynamicTokenQuant": parse_token_quant,
    "QuantLinear": parse_quant_linear,
    "SplitHeads": parse_split_heads,
    "RoPE": parse_rope,
    "QuantAttention": parse_attention,
    "SwiGLU": _elementwise("FlexSwiGLU"),
    "OnlineHadamard": parse_hadamard,
    "ResidualAdd": _elementwise("FlexResidualAdd"),
    "LastToken": parse_last_token,
    "MemoryRecall": parse_memory_recall,
}
