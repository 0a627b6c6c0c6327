"""Llama-family decoder in PyTorch + Brevitas with the FlexLLM quantization points.

Data flow of one decoder layer (``[B, L, hidden]`` residual stream ``h``)::

    x  = rmsnorm(h)                            fp32
    q,k,v = Linear(Qin(x))                     Qin: per-token dynamic input quant, int weights
    q,k = rope(q), rope(k); q *= 1/sqrt(d)     fp32
    q,k,v = Qq(q), Qk(k), Qv(v)                int8 static per head (k, v are what the KV cache holds)
    p  = Qp(softmax(q k^T + causal mask))      fp32 softmax, uint8 static per head
    h += o_proj(Qin(p v))
    x  = rmsnorm(h)
    u  = silu(gate(Qin(x))) * up(Qin(x))       gate and up share one input quantizer
    h += down(Qin(R4(u)))                      R4: online Hadamard (identity unless rotated)

Every quantization point is a Brevitas module and disappears when its QuantSpec entry is None.
"""

from __future__ import annotations

import contextlib
import functools
import math
from typing import List, Optional, Tuple

import torch
from torch import nn
import torch.nn.functional as F

import brevitas.nn as qnn

from .arch import LlamaArch
from .quant_presets import QuantSpec
from .quantizers import dynamic_input_quant, per_head_static, weight_quant
from .rope import apply_rope, rope_tables

KVCache = List[Tuple[torch.Tensor, torch.Tensor]]


@contextlib.contextmanager
def no_random_init():
    """Build modules without drawing their random initial weights (``torch.nn.init``'s
    ``kaiming_uniform_``, ``uniform_`` and ``normal_`` do nothing inside the block, as in Hugging Face's
    ``no_init_weights``): for a model whose every parameter is loaded right after construction (a
    Llama-3.2-1B model draws 1.2 B random numbers otherwise). Parameters keep uninitialised memory until
    they are loaded."""
    names = ("kaiming_uniform_", "uniform_", "normal_")
    saved = {n: getattr(nn.init, n) for n in names}
    for n in names:
        setattr(nn.init, n, lambda tensor, *args, **kwargs: tensor)
    try:
        yield
    finally:
        for n, fn in saved.items():
            setattr(nn.init, n, fn)


class RMSNorm(nn.Module):

    def __init__(self, size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x):
        var = x.pow(2).mean(-1, keepdim=True)
        return self.weight * (x * torch.rsqrt(var + self.eps))


class TokenQuant(nn.Module):
    """Per-token dynamic quantization of a linear input (a Brevitas QuantIdentity); identity if kind is None.

    In export mode the same arithmetic is emitted as a QONNX ``Quant`` node whose scale (and zero point)
    are computed in the graph per token; see docs/qonnx-dynamic-quant.md.
    """

    def __init__(self, kind: Optional[str], clip_ratio: float = 1.0):
        super().__init__()
        self.kind = kind
        self.clip_ratio = float(clip_ratio)
        self.quant = qnn.QuantIdentity(act_quant=dynamic_input_quant(kind, clip_ratio)) if kind else None
        self.export_mode = False

    def forward(self, x):
        if self.quant is None:
            return x
        if self.export_mode:
            from .export_ops import dynamic_token_quant
            return dynamic_token_quant(x, self.kind, quant_identity=self.quant)
        return self.quant(x)


class HeadQuant(nn.Module):
    """Static per-head quantizer for [B, heads, L, D] tensors (Brevitas QuantIdentity with a per-head
    parameter threshold). ``observe`` mode records max|x| per head instead of quantizing."""

    def __init__(self, num_heads: int, bits: Optional[int], signed: bool):
        super().__init__()
        self.num_heads = num_heads
        self.quant = (qnn.QuantIdentity(act_quant=per_head_static(num_heads, signed, bits))
                      if bits else None)
        self.observing = False
        self.register_buffer("observed_max", torch.zeros(num_heads), persistent=False)

    def forward(self, x):
        if self.quant is None:
            return x
        if self.observing:
            self.observed_max = torch.maximum(self.observed_max, x.detach().abs().amax(dim=(0, 2, 3)))
            return x
        return self.quant(x)

    @property
    def threshold_param(self) -> nn.Parameter:
        return self.quant.act_quant.fused_activation_quant_proxy.tensor_quant.scaling_impl.value

    def set_threshold(self, threshold: torch.Tensor):
        threshold = torch.clamp(threshold.detach().to(torch.float32), min=1e-8)
        with torch.no_grad():
            self.threshold_param.copy_(threshold.view_as(self.threshold_param))

    def scale(self) -> torch.Tensor:
        return self.quant.act_quant.scale().detach().view(-1)


class QuantLinearUnit(nn.Module):
    """A linear layer with its own per-token input quantizer (``input_quant``) and int weights."""

    def __init__(self, in_features: int, out_features: int, spec: QuantSpec, site: Optional[str] = None):
        """``site``: the linear-input site whose quantizer this unit owns (QuantSpec.INPUT_SITES), None for
        a unit that reads another unit's quantized input (k/v read q_proj's, up reads gate_proj's)."""
        super().__init__()
        wq = weight_quant(spec.weight_bits) if spec.weight_bits else None
        self.input_quant = (TokenQuant(spec.input_kind(site), spec.input_clip(site)) if site is not None
                            else TokenQuant(None))
        self.linear = qnn.QuantLinear(in_features, out_features, bias=False, weight_quant=wq)

    @property
    def weight(self) -> nn.Parameter:
        return self.linear.weight

    def forward(self, x):
        return self.linear(self.input_quant(x))


@functools.lru_cache(maxsize=8)
def _hadamard_t(size: int, dtype: torch.dtype) -> torch.Tensor:
    """H^T of one size, shared by every layer (8192 x 8192 float32 is 256 MB, once)."""
    from .hadamard import hadamard_matrix
    return torch.from_numpy(hadamard_matrix(size).T.copy()).to(dtype)


@functools.lru_cache(maxsize=8)
def _hadamard_kron_factors(size: int, dtype: torch.dtype):
    """(H_a, H_b) with H_size = kron(H_a, H_b), a * b = size (powers of two, a <= b)."""
    from .hadamard import hadamard_matrix
    k = size.bit_length() - 1
    a, b = 2 ** (k // 2), 2 ** (k - k // 2)
    return (torch.from_numpy(hadamard_matrix(a)).to(dtype), torch.from_numpy(hadamard_matrix(b)).to(dtype))


class OnlineHadamard(nn.Module):
    """R4: x -> x @ H^T with H the orthonormal Hadamard matrix of the last dim; identity when disabled."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size
        self.enabled = False

    def forward(self, x):
        if not self.enabled:
            return x
        if getattr(self, "export_mode", False):
            # Export: one MatMul with the constant hadamard_matrix(n).T (the fast transform does not export).
            from .export_ops import hadamard_matmul
            return hadamard_matmul(x)
        # A dense matmul with the cached H^T is several times faster in PyTorch than the butterfly
        # network; the bit-true golden model uses the butterfly order the hardware implements.
        # Large powers of two use the Kronecker split H_n = H_a (x) H_b (Sylvester, symmetric):
        # x @ H_n = H_a @ X @ H_b with X = x viewed as [a, b], 2 * sqrt(n) instead of n MACs per element.
        if self.size >= 1024 and self.size & (self.size - 1) == 0:
            h_a, h_b = _hadamard_kron_factors(self.size, x.dtype)
            xs = x.reshape(*x.shape[:-1], h_a.shape[0], h_b.shape[0])
            return torch.matmul(torch.matmul(h_a, xs), h_b).reshape(x.shape)
        return torch.matmul(x, _hadamard_t(self.size, x.dtype))


class Attention(nn.Module):

    def __init__(self, arch: LlamaArch, spec: QuantSpec):
        super().__init__()
        self.arch = arch
        h, d = arch.hidden_size, arch.head_dim
        self.q_proj = QuantLinearUnit(h, arch.q_size, spec, "q_proj")
        # k and v read the same quantized input as q: one quantizer instance per input tensor.
        self.k_proj = QuantLinearUnit(h, arch.kv_size, spec)
        self.v_proj = QuantLinearUnit(h, arch.kv_size, spec)
        self.o_proj = QuantLinearUnit(arch.q_size, h, spec, "o_proj")
        self.q_quant = HeadQuant(arch.num_heads, spec.qkv_bits, signed=True)
        self.k_quant = HeadQuant(arch.num_kv_heads, spec.qkv_bits, signed=True)
        self.v_quant = HeadQuant(arch.num_kv_heads, spec.qkv_bits, signed=True)
        self.p_quant = HeadQuant(arch.num_heads, spec.softmax_bits, signed=False)
        self.softmax_scale = 1.0 / math.sqrt(d)

    # The forward pass is split into the stages below (the same tensor operations in the same order) so that
    # calibration can run each stage once and keep its outputs (calibration.calibrate_layer).
    def project(self, xq, cos, sin):
        """q [B, H, L, d], k and v [B, KVH, L, d] from the quantized input ``xq``: the projections, RoPE
        and the softmax scale folded into q, before the per-head quantizers."""
        a = self.arch
        b, l, _ = xq.shape
        q = self.q_proj.linear(xq).view(b, l, a.num_heads, a.head_dim).transpose(1, 2)
        k = self.k_proj.linear(xq).view(b, l, a.num_kv_heads, a.head_dim).transpose(1, 2)
        v = self.v_proj.linear(xq).view(b, l, a.num_kv_heads, a.head_dim).transpose(1, 2)
        q = apply_rope(q, cos, sin) * self.softmax_scale
        k = apply_rope(k, cos, sin)
        return q, k, v

    def keys(self, k, v, past: Optional[Tuple[torch.Tensor, torch.Tensor]] = None):
        """K and V of every query head: the cache ``past`` followed by the new ones, repeated per GQA group."""
        if past is not None:
            k = torch.cat([past[0], k], dim=2)
            v = torch.cat([past[1], v], dim=2)
        if self.arch.gqa_group > 1:
            k = k.repeat_interleave(self.arch.gqa_group, dim=1)
            v = v.repeat_interleave(self.arch.gqa_group, dim=1)
        return k, v

    @staticmethod
    def probabilities(q, k, mask):
        """softmax(q k^T + mask) [B, H, L, T] in fp32 (before the P quantizer)."""
        scores = torch.matmul(q, k.transpose(-1, -2))
        if mask is not None:
            scores = scores + mask
        return torch.softmax(scores, dim=-1)

    def mix(self, p, v):
        """p v with the heads concatenated: the o_proj input [B, L, heads * d] (before its quantizer)."""
        b, _, l, _ = p.shape
        return torch.matmul(p, v).transpose(1, 2).reshape(b, l, self.arch.q_size)

    def forward(self, x, cos, sin, mask, past: Optional[Tuple[torch.Tensor, torch.Tensor]] = None):
        q, k, v = self.project(self.q_proj.input_quant(x), cos, sin)
        q, k, v = self.q_quant(q), self.k_quant(k), self.v_quant(v)
        present = (k, v)
        k, v = self.keys(k, v, past)
        p = self.p_quant(self.probabilities(q, k, mask))
        return self.o_proj(self.mix(p, v)), present


class MLP(nn.Module):

    def __init__(self, arch: LlamaArch, spec: QuantSpec):
        super().__init__()
        h, f = arch.hidden_size, arch.intermediate_size
        self.gate_proj = QuantLinearUnit(h, f, spec, "gate_proj")
        self.up_proj = QuantLinearUnit(h, f, spec)
        self.down_proj = QuantLinearUnit(f, h, spec, "down_proj")
        self.online_hadamard = OnlineHadamard(f)

    def forward(self, x):
        xq = self.gate_proj.input_quant(x)
        u = F.silu(self.gate_proj.linear(xq)) * self.up_proj.linear(xq)
        return self.down_proj(self.online_hadamard(u))


class DecoderLayer(nn.Module):

    def __init__(self, arch: LlamaArch, spec: QuantSpec):
        super().__init__()
        self.input_layernorm = RMSNorm(arch.hidden_size, arch.rms_norm_eps)
        self.self_attn = Attention(arch, spec)
        self.post_attention_layernorm = RMSNorm(arch.hidden_size, arch.rms_norm_eps)
        self.mlp = MLP(arch, spec)

    def forward(self, h, cos, sin, mask, past=None):
        attn, present = self.self_attn(self.input_layernorm(h), cos, sin, mask, past)
        h = h + attn
        h = h + self.mlp(self.post_attention_layernorm(h))
        return h, present


def causal_mask(query_len: int, past_len: int, dtype=torch.float32) -> torch.Tensor:
    """Additive mask [L, past+L]: 0 where key position <= query position, finfo.min elsewhere."""
    q_pos = torch.arange(query_len)[:, None] + past_len
    k_pos = torch.arange(past_len + query_len)[None, :]
    return torch.where(k_pos <= q_pos, 0.0, torch.finfo(dtype).min).to(dtype)


class LlamaModel(nn.Module):
    """Decoder-only Llama with HF-compatible parameter names (``model.layers.{i}...``, ``lm_head``).

    The LM head is always its own (quantizable) linear; with tied embeddings it starts as a copy of the
    embedding table, since rotations and norm fusion make the two differ.
    """

    def __init__(self, arch: LlamaArch, spec: QuantSpec, max_positions: Optional[int] = None):
        super().__init__()
        self.arch = arch
        self.spec = spec
        self.embed_tokens = nn.Embedding(arch.vocab_size, arch.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(arch, spec) for _ in range(arch.num_layers))
        self.norm = RMSNorm(arch.hidden_size, arch.rms_norm_eps)
        self.lm_head = QuantLinearUnit(arch.hidden_size, arch.vocab_size, spec, "lm_head")
        n = max_positions or min(arch.max_position_embeddings, 8192)
        cos, sin = rope_tables(arch, n)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.rotated = False

    # ---- weights -------------------------------------------------------------------------------
    def load_hf_state_dict(self, state_dict):
        """Copy HF-named float weights (``model.embed_tokens.weight`` ...) into this model."""
        a = self.arch
        own = {}
        own["embed_tokens.weight"] = self.embed_tokens.weight
        own["norm.weight"] = self.norm.weight
        for i, layer in enumerate(self.layers):
            p = f"model.layers.{i}."
            own[p + "input_layernorm.weight"] = layer.input_layernorm.weight
            own[p + "post_attention_layernorm.weight"] = layer.post_attention_layernorm.weight
            for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
                own[p + f"self_attn.{name}.weight"] = getattr(layer.self_attn, name).weight
            for name in ("gate_proj", "up_proj", "down_proj"):
                own[p + f"mlp.{name}.weight"] = getattr(layer.mlp, name).weight
        sd = {k[len("model."):] if k in ("model.embed_tokens.weight", "model.norm.weight") else k: v
              for k, v in state_dict.items()}
        missing = sorted(set(own) - set(sd))
        if missing:
            raise ValueError(f"state dict is missing {len(missing)} tensor(s), e.g. {missing[:3]}")
        with torch.no_grad():
            for name, param in own.items():
                src = sd[name]
                if tuple(src.shape) != tuple(param.shape):
                    raise ValueError(f"tensor {name}: shape {tuple(src.shape)} does not match the "
                                     f"architecture's {tuple(param.shape)}")
                param.copy_(src.to(torch.float32))
            head = sd.get("lm_head.weight")
            if head is None or a.tie_embeddings:
                head = sd["embed_tokens.weight"]
            self.lm_head.weight.copy_(head.to(torch.float32))

    # ---- forward -------------------------------------------------------------------------------
    def rope(self, start: int, length: int):
        end = start + length
        if end > self.rope_cos.shape[0]:
            raise ValueError(f"position {end} exceeds the model's RoPE table ({self.rope_cos.shape[0]})")
        return self.rope_cos[start:end], self.rope_sin[start:end]

    def hidden_states(self, input_ids: torch.Tensor, past: Optional[KVCache] = None,
                      start: Optional[int] = None):
        """Final-norm hidden states [B, L, hidden] and the new K/V of every layer."""
        b, l = input_ids.shape
        past_len = 0 if past is None else past[0][0].shape[2]
        start = past_len if start is None else start
        cos, sin = self.rope(start, l)
        mask = causal_mask(l, past_len) if l > 1 else None
        h = self.embed_tokens(input_ids)
        presents: KVCache = []
        for i, layer in enumerate(self.layers):
            h, present = layer(h, cos, sin, mask, None if past is None else past[i])
            presents.append(present)
        return self.norm(h), presents

    def forward(self, input_ids: torch.Tensor, past: Optional[KVCache] = None):
        """Logits [B, L, vocab] and the new K/V of every layer (append them to ``past`` to decode)."""
        h, presents = self.hidden_states(input_ids, past)
        return self.lm_head(h), presents

    def linears(self):
        """(qualified name, QuantLinearUnit) of every linear, in execution order."""
        for i, layer in enumerate(self.layers):
            for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
                yield f"layers.{i}.self_attn.{name}", getattr(layer.self_attn, name)
            for name in ("gate_proj", "up_proj", "down_proj"):
                yield f"layers.{i}.mlp.{name}", getattr(layer.mlp, name)
        yield "lm_head", self.lm_head

    def head_quants(self):
        for i, layer in enumerate(self.layers):
            at = layer.self_attn
            for name in ("q_quant", "k_quant", "v_quant", "p_quant"):
                yield f"layers.{i}.self_attn.{name}", getattr(at, name)


def append_kv(past: Optional[KVCache], new: KVCache) -> KVCache:
    if past is None:
        return list(new)
    return [(torch.cat([pk, nk], 2), torch.cat([pv, nv], 2)) for (pk, pv), (nk, nv) in zip(past, new)]
