"""C++ templates of the FlexLLM layers: one config template and one function-call template per layer.

Each function template yields the buffer declaration(s) of the layer's output and the call into the
``layers/`` library; each config template yields the ``parameters.h`` entries (engine configuration
typedefs, external-memory offsets). Prefill and decode use the same templates: only the maxima
(tokens per call, context) and the lane counts differ, both from the stage's configuration.

Buffers are ``static`` arrays ``[max_rows][buf_width]`` (row-major tokens x features); external
memory is reached through the kernel's pointers ``wmem`` (packed integer weights), ``fmem`` (fp32
parameters), ``embed`` (embedding table) and ``k_cache`` / ``v_cache``.
"""

from hls4ml.backends.template import FunctionCallTemplate, LayerConfigTemplate

from ..graph import producer
from ..layers import (FlexAttention, FlexEmbedding, FlexHadamard, FlexLastToken, FlexQuantLinear, FlexResidualAdd,
                      FlexRMSNorm, FlexSwiGLU, FlexTokenQuant)

KIND_ENUM = {"uint4_asym": "flexllm::INPUT_UINT4_ASYM", "int8": "flexllm::INPUT_INT8_SYM"}
CODE_TYPE = {"uint4_asym": "uint8_t", "int8": "int8_t"}


def _cfg(layer, key, default):
    value = layer.model.config.config.get("FlexLLM", {}).get(key)
    return int(value) if value else default


def _var(layer, i=0):
    return layer.get_output_variable(layer.outputs[i]).name


def _src(layer, i=0):
    """The producing layer of input ``i``."""
    return producer(layer.model, layer.inputs[i])


def _in(layer, i=0):
    src = _src(layer, i)
    return src.get_output_variable(layer.inputs[i]).name


def _decl(layer, ctype="float", i=0):
    return f"static {ctype} {_var(layer, i)}[{layer.get_attr('max_rows')}][{layer.get_attr('buf_width')}];"


def _rows_of(layer):
    return int(layer.get_attr("max_rows"))


class _Function(FunctionCallTemplate):
    HEADERS = ()
    LAYER = None

    def __init__(self):
        super().__init__(self.LAYER, include_header=tuple(f"flexllm/{h}" for h in self.HEADERS))


class _Config(LayerConfigTemplate):
    LAYER = None

    def __init__(self):
        super().__init__(self.LAYER)


# ---- embedding ------------------------------------------------------------------------------------
class EmbeddingFunctionTemplate(_Function):
    LAYER, HEADERS = FlexEmbedding, ("flexllm_embedding.h",)

    def format(self, node):
        t, d = _rows_of(node), node.get_attr("buf_width")
        return (f"{_decl(node)}\n"
                f"flexllm::embedding<{t}, {d}>(embed + {node.get_attr('table_off')}, input_ids, n_tokens, {d}, "
                f"{_var(node)});")


# ---- RMSNorm --------------------------------------------------------------------------------------
class RMSNormFunctionTemplate(_Function):
    LAYER, HEADERS = FlexRMSNorm, ("flexllm_rmsnorm.h",)

    def format(self, node):
        t, d = _rows_of(node), node.get_attr("buf_width")
        return (f"{_decl(node)}\n"
                f"flexllm::rmsnorm<{t}, {d}>({_in(node)}, fmem + {node.get_attr('w_off')}, "
                f"{float(node.get_attr('eps'))!r}f, {node.get_attr('rows')}, {node.get_attr('n_in')}, {_var(node)});")


# ---- per-token dynamic quantization ---------------------------------------------------------------
class TokenQuantFunctionTemplate(_Function):
    LAYER, HEADERS = FlexTokenQuant, ("flexllm_token_quant.h",)

    def format(self, node):
        t, d, kind = _rows_of(node), node.get_attr("buf_width"), node.get_attr("kind")
        out = _var(node)
        return (f"{_decl(node, CODE_TYPE[kind])}\n"
                f"static float {out}_scale[{t}];\nstatic float {out}_zero[{t}];\n"
                f"flexllm::quantize_tokens<{t}, {d}, {KIND_ENUM[kind]}>({_in(node)}, {node.get_attr('rows')}, "
                f"{node.get_attr('n_in')}, {out}, {out}_scale, {out}_zero);")


# ---- quantized linear -----------------------------------------------------------------------------
def linear_lanes(node):
    """(token lanes, out lanes, in lanes): prefill TP x ports x WP, decode (one token) 1 x BP x WP.
    Out lanes are rounded up to a multiple of the weight ports (each port feeds its own lanes); in
    lanes are capped at the codes of one 512-bit word."""
    ports = _cfg(node, "WeightPorts", 1)
    if _rows_of(node) > 1:
        tl, ol, il = (min(_cfg(node, "TokenLanes", 4), _rows_of(node)), _cfg(node, "PrefillOutLanes", ports),
                      _cfg(node, "PrefillInLanes", 8))
    else:
        tl, ol, il = 1, _cfg(node, "OutLanes", max(4, ports)), _cfg(node, "InLanes", 16)
    ol = -(-ol // ports) * ports
    codes_per_word = 128 if node.get_attr("weight_bits") == 4 else 64
    return tl, ol, min(il, codes_per_word)


class QuantLinearConfigTemplate(_Config):
    LAYER = FlexQuantLinear

    def format(self, node):
        src = _src(node)
        tl, ol, il = linear_lanes(node)
        return (f"// {node.name}: {node.get_attr('n_in')} -> {node.get_attr('n_out')}, "
                f"int{node.get_attr('weight_bits')} weights, {node.get_attr('input_kind')} inputs, "
                f"{node.get_attr('acc_bits')}-bit accumulator bound\n"
                f"typedef flexllm::linear_config<{_rows_of(node)}, {src.get_attr('buf_width')}, "
                f"{node.get_attr('buf_width')}, {tl}, {ol}, {il}, {node.get_attr('weight_bits')}, "
                f"{KIND_ENUM[node.get_attr('input_kind')]}, {_cfg(node, 'WeightPorts', 1)}> config{node.index};")


class QuantLinearFunctionTemplate(_Function):
    LAYER, HEADERS = FlexQuantLinear, ("flexllm_linear.h",)

    def format(self, node):
        q = _in(node)
        return (f"{_decl(node)}\n"
                f"flexllm::linear<config{node.index}>({q}, {q}_scale, {q}_zero, wports, {node.get_attr('w_off')}, "
                f"fmem + {node.get_attr('s_off')}, fmem + {node.get_attr('z_off')}, {_var(node)}, "
                f"{node.get_attr('rows')}, {node.get_attr('n_in')}, {node.get_attr('n_out')});")


# ---- attention ------------------------------------------------------------------------------------
class AttentionConfigTemplate(_Config):
    LAYER = FlexAttention

    def format(self, node):
        h, kvh, d = node.get_attr("heads"), node.get_attr("kv_heads"), node.get_attr("head_dim")
        ctx = node.model.config.config["FlexLLM"]["MaxContext"]
        hl = min(_cfg(node, "HeadLanes", 1), h // kvh)
        kl = _cfg(node, "KeyLanes", 4)
        return (f"// {node.name}: {h} heads / {kvh} kv heads x {d}, KV cache slot {node.get_attr('cache_index')}\n"
                f"typedef flexllm::attention_config<{ctx}, {_rows_of(node)}, {d}, {h}, {kvh}, {h * d}, {hl}, {kl}> "
                f"config{node.index};")


class AttentionFunctionTemplate(_Function):
    LAYER, HEADERS = FlexAttention, ("flexllm_attention.h",)

    def format(self, node):
        h, kvh, d = node.get_attr("heads"), node.get_attr("kv_heads"), node.get_attr("head_dim")
        if sorted(node.get_attr("rope_inputs", ())) != [0, 1]:
            raise ValueError(f"attention '{node.name}': RoPE must be applied to both Q and K")
        out, sc = _var(node), f"{_var(node)}_scales"
        ctx = node.model.config.config["FlexLLM"]["MaxContext"]
        loads = []
        for field, key, n in (("c_q", "c_q", h), ("inv_k", "inv_k", kvh), ("inv_v", "inv_v", kvh),
                              ("qk", "qk_scale", h), ("inv_p", "inv_p", h), ("pv", "pv_scale", h)):
            loads.append(f"for (int i = 0; i < {n}; ++i) {sc}.{field}[i] = fmem[{node.get_attr(key + '_off')} + i];")
        return (f"{_decl(node)}\n"
                f"static flexllm::attention_scales<{h}, {kvh}> {sc};\n" + "\n".join(loads) + "\n"
                f"const flexllm::kv_cache_geometry {out}_geo = {{{kvh}, {ctx}, {d}}};\n"
                f"flexllm::attention<config{node.index}>({_in(node, 0)}, {_in(node, 1)}, {_in(node, 2)}, "
                f"fmem + {node.get_attr('cos_off')}, fmem + {node.get_attr('sin_off')}, {sc}, k_cache, v_cache, "
                f"{out}_geo, {'l' if node.get_attr('in_block') else node.get_attr('cache_index')}, {out}, "
                f"{node.get_attr('rows')}, position, {h});")


# ---- SwiGLU, residual, Hadamard, last token ---------------------------------------------------------
class SwiGLUFunctionTemplate(_Function):
    LAYER, HEADERS = FlexSwiGLU, ("flexllm_activation.h",)

    def format(self, node):
        t, d = _rows_of(node), node.get_attr("buf_width")
        return (f"{_decl(node)}\n"
                f"flexllm::silu_mul_rows<{t}, {d}>({_in(node, 0)}, {_in(node, 1)}, {node.get_attr('rows')}, "
                f"{node.get_attr('n_in')}, {_var(node)});")


class ResidualAddFunctionTemplate(_Function):
    LAYER, HEADERS = FlexResidualAdd, ("flexllm_residual.h",)

    def format(self, node):
        t, d = _rows_of(node), node.get_attr("buf_width")
        a, b = _in(node, 0), _in(node, 1)
        return (f"{_decl(node)}\n"
                f"flexllm::residual_sum<{t}, {d}>({a}, {b}, {node.get_attr('rows')}, {node.get_attr('n_in')}, "
                f"{_var(node)});")


class HadamardConfigTemplate(_Config):
    LAYER = FlexHadamard

    def format(self, node):
        m = node.get_attr("m")
        signs = ", ".join(str(int(v)) for v in node.get_attr("signs").reshape(-1))
        return f"static const int8_t hadamard_signs{node.index}[{m * m}] = {{{signs}}};"


class HadamardFunctionTemplate(_Function):
    LAYER, HEADERS = FlexHadamard, ("flexllm_hadamard.h",)

    def format(self, node):
        t, d, m, n = _rows_of(node), node.get_attr("buf_width"), node.get_attr("m"), node.get_attr("n_in")
        p = n // m
        log2_p = p.bit_length() - 1
        return (f"{_decl(node)}\n"
                f"flexllm::hadamard_rows<{t}, {d}, {m}>({_in(node)}, {node.get_attr('rows')}, {m}, {log2_p}, "
                f"hadamard_signs{node.index}, flexllm::hadamard_scale({n}), {_var(node)});")


class LastTokenFunctionTemplate(_Function):
    LAYER, HEADERS = FlexLastToken, ("flexllm_residual.h",)

    def format(self, node):
        d, src = node.get_attr("buf_width"), _src(node)
        return (f"{_decl(node)}\n"
                f"flexllm::copy_row<{src.get_attr('max_rows')}, {d}>({_in(node)}, n_tokens - 1, "
                f"{node.get_attr('n_in')}, {_var(node)}[0]);")


TEMPLATES = (EmbeddingFunctionTemplate, RMSNormFunctionTemplate, TokenQuantFunctionTemplate,
             QuantLinearConfigTemplate, QuantLinearFunctionTemplate, AttentionConfigTemplate,
             AttentionFunctionTemplate, SwiGLUFunctionTemplate, ResidualAddFunctionTemplate,
             HadamardConfigTemplate, HadamardFunctionTemplate, LastTokenFunctionTemplate)


def register_templates(backend):
    """Called by hls4ml's pass scanner with the backend (``register_<module>`` convention)."""
    for cls in TEMPLATES:
        backend.register_template(cls)
