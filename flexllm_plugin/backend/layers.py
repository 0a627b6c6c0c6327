"""hls4ml layer classes of the FlexLLM backend: one class per fused Llama op.

Each class is the model-IR node for one op of the fused QONNX graph (``flexllm_plugin.frontend``):
the ONNX handler that creates it lives in :mod:`flexllm_plugin.converters.onnx_handlers`, the C++
call that implements it in :mod:`flexllm_plugin.backend.templates`, and the HLS code in ``layers/``.

Tensors between layers are row-major ``[n_tokens, width]`` arrays in C++ (``n_tokens`` = the
stage's maximum tokens per call; the run-time token count is a kernel argument). Parameters are
numpy arrays in layer attributes; the writer packs them into the external-memory images
(``wmem`` integer weights, ``fmem`` fp32 parameters), never into headers.
"""

from __future__ import annotations

import numpy as np
from hls4ml.model.attributes import Attribute
from hls4ml.model.layers import Input, Layer
from hls4ml.model.types import IntegerPrecisionType, StandardFloatPrecisionType

F32 = StandardFloatPrecisionType(32, 8)
INT8 = IntegerPrecisionType(8, signed=True)
UINT8 = IntegerPrecisionType(8, signed=False)
INPUT_KINDS = ("uint4_asym", "int8")
INPUT_CLASSES = ("Input", "InputLayer", "FlexInput")   # graph inputs (no code of their own)


class FlexInput(Input):
    """Graph input that also accepts a scalar per batch entry (the decode graph's ``position`` [1], whose
    shape is empty once hls4ml strips the batch dimension; stock ``Input`` fails on it)."""

    def initialize(self):
        if not list(self.attributes["input_shape"]):
            self.attributes["input_shape"] = [1]
        super().initialize()


class FlexLayer(Layer):
    """Common base: every op works on ``n_tokens`` rows."""

    _expected_attributes = [Attribute("n_tokens")]

    def _out(self, shape, precision=F32, out_name=None):
        self.add_output_variable(list(shape), out_name=out_name, precision=precision)


class FlexEmbedding(FlexLayer):
    """Token embedding lookup from an fp32 table ``[vocab, hidden]`` in external memory."""

    _expected_attributes = [Attribute("vocab_size"), Attribute("n_out"), Attribute("table", value_type=np.ndarray)]

    def initialize(self):
        self._out((self.get_attr("n_tokens"), self.get_attr("n_out")))


class FlexRMSNorm(FlexLayer):
    _expected_attributes = [Attribute("n_in"), Attribute("eps", value_type=float),
                            Attribute("weight", value_type=np.ndarray)]

    def initialize(self):
        self._out((self.get_attr("n_tokens"), self.get_attr("n_in")))


class FlexTokenQuant(FlexLayer):
    """Per-token dynamic quantization of a linear input: codes plus one scale (and zero) per token; ``clip``:
    the clip ratio of a uint4_asym range (1: none)."""

    _expected_attributes = [Attribute("n_in"), Attribute("kind", value_type=str),
                            Attribute("clip", value_type=float, default=1.0)]

    def initialize(self):
        kind = self.get_attr("kind")
        if kind not in INPUT_KINDS:
            raise ValueError(f"layer {self.name}: token quantization kind {kind!r} not in {INPUT_KINDS}")
        self._out((self.get_attr("n_tokens"), self.get_attr("n_in")), UINT8 if kind == "uint4_asym" else INT8)


class FlexQuantLinear(FlexLayer):
    """Integer linear ``y = dequant(q) @ (w_int * s_w)^T`` with row-sum correction of the zero offset."""

    _expected_attributes = [Attribute("n_in"), Attribute("n_out"), Attribute("weight_bits"),
                            Attribute("input_kind", value_type=str),
                            Attribute("w_int", value_type=np.ndarray), Attribute("w_scale", value_type=np.ndarray)]

    def initialize(self):
        w = self.get_attr("w_int")
        if w.shape != (self.get_attr("n_out"), self.get_attr("n_in")):
            raise ValueError(f"layer {self.name}: weight shape {w.shape} != (n_out, n_in)")
        self._out((self.get_attr("n_tokens"), self.get_attr("n_out")))


class FlexSplitHeads(FlexLayer):
    """``[L, heads*head_dim] -> [heads, L, head_dim]``: a view in the kernel's row-major buffers
    (removed by the ``fold_head_views`` pass; the consumer reads the projection's buffer)."""

    _expected_attributes = [Attribute("heads"), Attribute("head_dim")]

    def initialize(self):
        self._out((self.get_attr("heads"), self.get_attr("n_tokens"), self.get_attr("head_dim")))


class FlexRoPE(FlexLayer):
    """Rotate-half rotary embedding of ``heads`` heads, table rows from the absolute position."""

    _expected_attributes = [Attribute("heads"), Attribute("head_dim"), Attribute("cos", value_type=np.ndarray),
                            Attribute("sin", value_type=np.ndarray), Attribute("has_position", value_type=bool)]

    def initialize(self):
        self._out((self.get_attr("n_tokens"), self.get_attr("heads") * self.get_attr("head_dim")))


class FlexAttention(FlexLayer):
    """Causal GQA attention with int8 Q/K/V, uint8 P and the int8 KV cache in external memory.

    Outputs: ``attn`` [n_tokens, heads*head_dim] fp32, then the new K and V codes (written to the KV
    cache by the kernel; the host reads them back from there)."""

    _expected_attributes = [Attribute("heads"), Attribute("kv_heads"), Attribute("head_dim"),
                            Attribute("past_len"), Attribute("cache_index"),
                            Attribute("softmax_scale", value_type=float),
                            Attribute("s_q", value_type=np.ndarray), Attribute("s_k", value_type=np.ndarray),
                            Attribute("s_v", value_type=np.ndarray), Attribute("s_p", value_type=np.ndarray)]

    def initialize(self):
        n, h, kvh, d = (self.get_attr(k) for k in ("n_tokens", "heads", "kv_heads", "head_dim"))
        if h % kvh:
            raise ValueError(f"layer {self.name}: {h} heads not a multiple of {kvh} kv heads")
        self._out((n, h * d), F32, self.outputs[0])
        for out in self.outputs[1:]:
            self._out((kvh, n, d), INT8, out)


class FlexSwiGLU(FlexLayer):
    _expected_attributes = [Attribute("n_in")]

    def initialize(self):
        self._out((self.get_attr("n_tokens"), self.get_attr("n_in")))


class FlexHadamard(FlexLayer):
    """Online fast Hadamard transform (R4) of size ``n = m * 2^k``."""

    _expected_attributes = [Attribute("n_in"), Attribute("m"), Attribute("signs", value_type=np.ndarray)]

    def initialize(self):
        self._out((self.get_attr("n_tokens"), self.get_attr("n_in")))


class FlexResidualAdd(FlexLayer):
    _expected_attributes = [Attribute("n_in")]

    def initialize(self):
        self._out((self.get_attr("n_tokens"), self.get_attr("n_in")))


class FlexLastToken(FlexLayer):
    """The row of the last valid token (run-time ``n_tokens - 1``)."""

    _expected_attributes = [Attribute("n_in")]

    def initialize(self):
        self._out((1, self.get_attr("n_in")))


class FlexMemoryRecall(FlexLayer):
    """HMT memory recall (layers/flexllm_memory_recall.h): inputs summary [1, d], keys and memories [N, d],
    filled (slots 0 .. filled-1 hold memories); W_q [d, d] fp32 (streamed from HBM in the kernel); output
    P [1, d] = softmax((W_q S) . K / sqrt(d), empty slots masked) M, the fp32 contract."""

    _expected_attributes = [Attribute("slots"), Attribute("hidden"), Attribute("w_q", value_type=np.ndarray),
                            Attribute("lanes")]

    def initialize(self):
        lanes = self.get_attr("lanes")
        if lanes < 1 or lanes > 16 or 128 % lanes:
            raise ValueError(f"layer {self.name}: memory recall lanes must divide 128 and be <= 16, got {lanes}")
        d = self.get_attr("hidden")
        if self.get_attr("w_q").shape != (d, d):
            raise ValueError(f"layer {self.name}: W_q shape {self.get_attr('w_q').shape} != ({d}, {d})")
        self._out((1, d))


LAYER_CLASSES = {cls.__name__: cls for cls in (FlexEmbedding, FlexRMSNorm, FlexTokenQuant, FlexQuantLinear,
                                               FlexSplitHeads, FlexRoPE, FlexAttention, FlexSwiGLU, FlexHadamard,
                                               FlexResidualAdd, FlexLastToken, FlexMemoryRecall)}
