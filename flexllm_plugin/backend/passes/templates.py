"""C++ templates of the FlexLLM layers: each layer's row of the kernel schedule.

A FlexLLM kernel calls each shared unit from ONE place (``layers/flexllm_schedule.h``, the core in
``flexllm_plugin/templates/stage_core.h``); what distinguishes two calls of a unit is data: the layer's
``unit_call`` row (unit, sizes, external-memory offset ``off + l * stride``), set by the pass
``bind_units``. The config template of each layer class formats that row as a C++ initializer of
``flexllm::unit_call``; the writer collects the rows of the block and the tail, in graph order, into the
``BLOCK`` and ``TAIL`` tables of ``<stage>_parameters.h``. Layers folded into another unit's call
(residual add, last token) and the prologue's embedding have no row.

Lane counts are per stage, not per layer (one engine per kernel): :func:`linear_lanes_of_config`.
"""

from hls4ml.backends.template import FunctionCallTemplate, LayerConfigTemplate

from ...project.spec import DEFAULT_WEIGHT_PORTS, kv_lanes
from ..layers import (FlexAttention, FlexHadamard, FlexMemoryRecall, FlexQuantLinear, FlexRMSNorm, FlexSwiGLU,
                      FlexTokenQuant)

KIND_ENUM = {"uint4_asym": "flexllm::INPUT_UINT4_ASYM", "int8": "flexllm::INPUT_INT8_SYM",
             "mixed": "flexllm::INPUT_PER_CALL"}     # "mixed": the engine takes the kind with each call
CODE_TYPE = {"uint4_asym": "uint8_t", "int8": "int8_t"}


def _cfg(model, key, default):
    value = model.config.config.get("FlexLLM", {}).get(key)
    return int(value) if value else default


def stage_max_tokens(model) -> int:
    emb = next(layer for layer in model.get_layers() if layer.class_name == "FlexEmbedding")
    return int(emb.get_attr("n_tokens"))


def linear_lanes_of_config(model):
    """(token lanes, out lanes, in lanes) of the stage's ONE engine: prefill (several tokens per call)
    TP x BP x WP, decode (one token) 1 x BP x WP. Out lanes are rounded up to a multiple of the weight
    ports (each port feeds its own lanes); in lanes are capped at the codes of one 512-bit word."""
    ports = _cfg(model, "WeightPorts", DEFAULT_WEIGHT_PORTS)
    tokens = stage_max_tokens(model)
    if tokens > 1:
        tl, ol, il = (min(_cfg(model, "TokenLanes", 4), tokens), _cfg(model, "PrefillOutLanes", ports),
                      _cfg(model, "PrefillInLanes", 8))
    else:
        tl, ol, il = 1, _cfg(model, "OutLanes", ports), _cfg(model, "InLanes", 16)
    ol = -(-ol // ports) * ports
    bits = next(layer.get_attr("weight_bits") for layer in model.get_layers() if layer.class_name == "FlexQuantLinear")
    codes_per_word = 128 if bits == 4 else 64
    return tl, ol, min(il, codes_per_word)


def element_lanes_of_config(model) -> int:
    """Lanes of the element-wise units (RMSNorm, quantizer, SwiGLU, Hadamard): ElementLanes, a power of
    two <= 16 (the reduction contract, layers/flexllm_reduce.h)."""
    lanes = _cfg(model, "ElementLanes", 16)
    if lanes not in (1, 2, 4, 8, 16):
        raise ValueError(f"FlexLLM ElementLanes must be 1, 2, 4, 8 or 16, got {lanes}")
    return lanes


def dsp_lanes_of_config(model) -> int:
    """Output lanes of the engine on DSPs with MAC_DSP_PACK2: DSPLanes (prefill), every lane (decode)."""
    if (model.config.config.get("FlexLLM", {}).get("MacImpl") or "MAC_LUT") != "MAC_DSP_PACK2":
        return 0
    _, ol, _ = linear_lanes_of_config(model)
    return int(_cfg(model, "DSPLanes", 0) or ol)


def quant_lanes_of_config(model) -> int:
    """Lanes of the per-token quantizer (min / max and the codes: no fp32 sums, so not bound by the 16 lanes of
    the reduction contract): QuantLanes, a power of two <= 128."""
    lanes = _cfg(model, "QuantLanes", 64)
    if lanes < 1 or lanes > 128 or lanes & (lanes - 1):
        raise ValueError(f"FlexLLM QuantLanes must be a power of two in 1..128, got {lanes}")
    return lanes


def hadamard_lanes_of_config(model) -> int:
    """Lanes of the online Hadamard unit (butterflies per cycle): HadamardLanes, a power of two <= 128."""
    lanes = _cfg(model, "HadamardLanes", 64)
    if lanes < 1 or lanes > 128 or lanes & (lanes - 1):
        raise ValueError(f"FlexLLM HadamardLanes must be a power of two in 1..128, got {lanes}")
    return lanes


def attention_lanes_of_config(model, group: int):
    """(head lanes, key lanes) of the attention unit: HeadLanes query heads of one GQA group (at most
    the group) x KeyLanes keys per cycle."""
    return min(_cfg(model, "HeadLanes", 1), group), _cfg(model, "KeyLanes", 4)


def kv_lanes_of_config(model) -> int:
    return kv_lanes(_cfg(model, "KeyLanes", 4), _cfg(model, "WeightPorts", DEFAULT_WEIGHT_PORTS))


def unit_call_initializer(call: dict) -> str:
    """``{unit, d_in, d_out, flag, w_off, w_stride, p_off, p_stride, eps, kind, clip}`` of ``flexllm::unit_call``
    (kind: the input kind of a quantizer / linear call, 0 for the other units; clip: the quantizer's clip ratio)."""
    flag = call["flag"] if call["flag"].isdigit() else f"flexllm::{call['flag']}"
    (w_off, w_stride), (p_off, p_stride) = call["w_off"], call["p_off"]
    kind = KIND_ENUM[call["kind"]] if call.get("kind") else "0"
    return (f"{{flexllm::{call['unit']}, {call['d_in']}, {call['d_out']}, {flag}, {w_off}LL, {w_stride}LL, "
            f"{p_off}LL, {p_stride}LL, {float(call['eps'])!r}f, {kind}, {float(call.get('clip', 1.0))!r}f}}")


class _UnitCallTemplate(LayerConfigTemplate):
    LAYER = None

    def __init__(self):
        super().__init__(self.LAYER)

    def format(self, node):
        call = node.get_attr("unit_call")
        if call is None:
            raise ValueError(f"layer '{node.name}' ({node.class_name}) is bound to no unit (bind_units did not run?)")
        return f"{unit_call_initializer(call)},  // {node.name}"


class RMSNormCallTemplate(_UnitCallTemplate):
    LAYER = FlexRMSNorm


class TokenQuantCallTemplate(_UnitCallTemplate):
    LAYER = FlexTokenQuant


class QuantLinearCallTemplate(_UnitCallTemplate):
    LAYER = FlexQuantLinear


class AttentionCallTemplate(_UnitCallTemplate):
    LAYER = FlexAttention


class SwiGLUCallTemplate(_UnitCallTemplate):
    LAYER = FlexSwiGLU


class HadamardCallTemplate(_UnitCallTemplate):
    LAYER = FlexHadamard


MEMORY_RECALL_CALL = ("flexllm::memory_recall<{slots}, {hidden}, {lanes}>({w_q}, {summary}, {keys}, {memories}, "
                      "{filled}, {inv_sqrt_d}, {output});")


class MemoryRecallFunctionTemplate(FunctionCallTemplate):
    """The HMT recall's call of ``layers/flexllm_memory_recall.h`` (its own fp32 unit, not a schedule row).
    :meth:`format` binds the layer's graph variables (W_q as the pointer ``<layer>_w_q``); :meth:`call`
    binds C++ expressions of the caller (the HMT prefill kernel: W_q in HBM, the ring in URAM)."""

    def __init__(self):
        super().__init__(FlexMemoryRecall, include_header=["flexllm/flexllm_memory_recall.h"])
        self.template = MEMORY_RECALL_CALL

    def call(self, node, w_q: str, summary: str, keys: str, memories: str, filled: str, output: str) -> str:
        import math

        import numpy as np
        inv = float(np.float32(1.0 / math.sqrt(node.get_attr("hidden"))))      # f32(1 / sqrt(d)), the contract's
        return self.template.format(slots=node.get_attr("slots"), hidden=node.get_attr("hidden"),
                                    lanes=node.get_attr("lanes"), w_q=w_q, summary=summary, keys=keys,
                                    memories=memories, filled=filled, inv_sqrt_d=f"{inv.hex()}f", output=output)

    def format(self, node):
        names = [node.get_input_variable(i).name for i in node.inputs]
        return self.call(node, f"{node.name}_w_q", names[0], names[1], names[2], f"{names[3]}[0]",
                         node.get_output_variable().name)


TEMPLATES = (RMSNormCallTemplate, TokenQuantCallTemplate, QuantLinearCallTemplate, AttentionCallTemplate,
             SwiGLUCallTemplate, HadamardCallTemplate, MemoryRecallFunctionTemplate)


def register_templates(backend):
    """Called by hls4ml's pass scanner with the backend (``register_<module>`` convention)."""
    for cls in TEMPLATES:
        backend.register_template(cls)


def stage_lanes(model) -> dict:
    """Every parallelism knob of the stage's units (the cost model's inputs, flexllm_plugin.cost)."""
    tl, ol, il = linear_lanes_of_config(model)
    sched = model.config.config["FlexLLM"]["Schedule"]
    hl, kl = attention_lanes_of_config(model, sched["heads"] // sched["kv_heads"])
    return {"token_lanes": tl, "out_lanes": ol, "in_lanes": il, "ports": _cfg(model, "WeightPorts", DEFAULT_WEIGHT_PORTS),
            "head_lanes": hl, "key_lanes": kl, "kv_lanes": kv_lanes_of_config(model),
            "element_lanes": element_lanes_of_config(model), "quant_lanes": quant_lanes_of_config(model),
            "hadamard_lanes": hadamard_lanes_of_config(model),
            "mac": model.config.config["FlexLLM"].get("MacImpl") or "MAC_LUT", "dsp_lanes": dsp_lanes_of_config(model),
            "max_context": int(model.config.config["FlexLLM"]["MaxContext"])}
