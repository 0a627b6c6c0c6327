"""``QuantAttention``: scaled dot-product attention with static per-head Q/K/V/P quantizers and GQA."""

import numpy as np
from onnx import helper

from ._base import FlexLLMOp, as_f32_array, const_node, f32, matmul, quant, run_onnx_node, function_shape_op

MASK_MIN = np.finfo(np.float32).min


def causal_mask(q_len: int, kv_len: int) -> np.ndarray:
    """Additive mask [q_len, kv_len]: 0 where key j is visible from query i (``j <= i + kv_len - q_len``),
    float32 min elsewhere (the exported graph's ``mask`` constant for kv_len == q_len)."""
    i = np.arange(q_len)[:, None]
    j = np.arange(kv_len)[None, :]
    return np.where(j <= i + (kv_len - q_len), f32(0.0), f32(MASK_MIN)).astype(np.float32)


def _per_head(values, heads):
    return as_f32_array(values).reshape(1, heads, 1, 1)


class QuantAttention(FlexLLMOp):
    """inputs  ``q_rot`` [1, H, L, d], ``k_rot`` [1, KVH, L, d], ``v`` [1, KVH, L, d]
            decode only: ``past_key`` [1, KVH, P, d], ``past_value`` [1, KVH, P, d]
    attrs   ``softmax_scale`` (f), ``s_q`` (floats, H), ``s_k`` / ``s_v`` (floats, KVH), ``s_p`` (floats,
            H), ``causal`` (i), ``qkv_bits`` (i), ``p_bits`` (i); informative: ``num_heads``,
            ``num_kv_heads``, ``head_dim`` (i).
            An EMPTY scale list means that tensor is not quantized (presets without Q/K/V/P quantizers,
            e.g. w8a8: the graph has no such Quant node).
    outputs ``attn`` [1, L, H*d], ``k_new`` [1, KVH, L, d], ``v_new`` [1, KVH, L, d]

    In the replaced subgraph's order::

        q      = Quant(q_rot * softmax_scale, s_q, 0, qkv_bits, signed=1, narrow=0)
        k_new  = Quant(k_rot, s_k, ...)            v_new = Quant(v, s_v, ...)
        K      = concat(Quant(past_key, s_k), k_new, axis=2)    (decode; prefill: K = k_new)
        V      = concat(Quant(past_value, s_v), v_new, axis=2)
        K, V   repeated to H heads (head h reads kv head h // (H / KVH))
        S      = MatMul(q, K^T) (+ causal_mask(L, P + L) if causal)
        P      = Quant(Softmax(S, -1), s_p, 0, p_bits, signed=0, narrow=0)
        attn   = reshape(transpose(MatMul(P, V), (0, 2, 1, 3)), [1, L, H*d])

    (the past Quant is the decode graph's int8 marking of the KV cache input: identity on grid values).
    MatMul and Softmax run in onnxruntime like the replaced nodes."""

    NUM_INPUTS = (3, 5)
    NUM_OUTPUTS = 3

    def get_nodeattr_types(self):
        return {
            "softmax_scale": ("f", True, 1.0),
            "s_q": ("floats", False, []),
            "s_k": ("floats", False, []),
            "s_v": ("floats", False, []),
            "s_p": ("floats", False, []),
            "causal": ("i", True, 0, {0, 1}),
            "qkv_bits": ("i", False, 8),
            "p_bits": ("i", False, 8),
            "num_heads": ("i", False, 0),
            "num_kv_heads": ("i", False, 0),
            "head_dim": ("i", False, 0),
        }

    def verify_specific(self):
        heads, kv_heads = self.get_nodeattr("num_heads"), self.get_nodeattr("num_kv_heads")
        for attr, n in (("s_q", heads), ("s_p", heads), ("s_k", kv_heads), ("s_v", kv_heads)):
            vals = self.get_nodeattr(attr)
            if vals and n and len(vals) != n:
                raise ValueError(f"QuantAttention '{self.onnx_node.name}': {attr} has {len(vals)} values, "
                                 f"expected {n}")

    def make_shape_compatible_op(self, model):
        n_in = len(self.onnx_node.input)
        body = [const_node("shape", np.array([0, 0, -1], dtype=np.int64)),
                helper.make_node("Transpose", ["q"], ["qt"], perm=[0, 2, 1, 3]),
                helper.make_node("Reshape", ["qt", "shape"], ["attn"]),
                helper.make_node("Identity", ["k"], ["k_new"]),
                helper.make_node("Identity", ["v"], ["v_new"])]
        formal = ["q", "k", "v", "past_k", "past_v"][:n_in]
        return function_shape_op(model, self.onnx_node, f"QuantAttentionShape{n_in}", formal,
                                 ["attn", "k_new", "v_new"], body)

    def execute_node(self, context, graph):
        inputs = self._inputs(context)
        q_rot, k_rot, v = inputs[:3]
        past = inputs[3:5] if len(inputs) == 5 else None
        _, heads, q_len, dim = q_rot.shape
        kv_heads = k_rot.shape[1]
        bits, p_bits = self.get_nodeattr("qkv_bits"), self.get_nodeattr("p_bits")
        s_q, s_k, s_v, s_p = (self.get_nodeattr(a) for a in ("s_q", "s_k", "s_v", "s_p"))

        q = q_rot * f32(self.get_nodeattr("softmax_scale"))
        if s_q:
            q = quant(q, _per_head(s_q, heads), f32(0.0), bits, 1, 0)
        k_new = quant(k_rot, _per_head(s_k, kv_heads), f32(0.0), bits, 1, 0) if s_k else k_rot
        v_new = quant(v, _per_head(s_v, kv_heads), f32(0.0), bits, 1, 0) if s_v else v
        keys, values = k_new, v_new
        if past is not None:
            past_k, past_v = past
            if s_k:
                past_k = quant(past_k, _per_head(s_k, kv_heads), f32(0.0), bits, 1, 0)
            if s_v:
                past_v = quant(past_v, _per_head(s_v, kv_heads), f32(0.0), bits, 1, 0)
            keys = np.concatenate([past_k, k_new], axis=2)
            values = np.concatenate([past_v, v_new], axis=2)
        if heads != kv_heads:
            rep = heads // kv_heads
            keys = np.repeat(keys, rep, axis=1)
            values = np.repeat(values, rep, axis=1)
        scores = matmul(q, np.ascontiguousarray(keys.transpose(0, 1, 3, 2)))
        if self.get_nodeattr("causal"):
            scores = scores + causal_mask(q_len, keys.shape[2])
        probs = run_onnx_node("Softmax", [scores], axis=-1)
        if s_p:
            probs = quant(probs, _per_head(s_p, heads), f32(0.0), p_bits, 0, 0)
        out = matmul(probs, np.ascontiguousarray(values))
        attn = np.ascontiguousarray(out.transpose(0, 2, 1, 3)).reshape(1, q_len, heads * dim)
        self._set(context, attn, k_new, v_new)
