"""flexllm frontend on Hugging Face graphs: a tiny random ``transformers.LlamaForCausalLM`` (eager attention,
GQA, FFN 96), quantized with Brevitas and exported by ``brevitas.export.export_qonnx`` (TorchScript,
``input_ids`` [1, 8] -> ``logits`` [1, 8, vocab], no KV cache).

What each quantization of the HF model gives (``QUANT`` below):

* ``w4a8-tq`` / ``w4a4-tq``: every ``nn.Linear`` -> ``TokenQuant`` (our per-token dynamic input quantizer, a
  Brevitas ``QuantIdentity`` exported by ``brevitas_models.export_ops.dynamic_token_quant``) + Brevitas
  ``QuantLinear`` with int4 per-channel weights: FULLY fused (the counts of our exporter's prefill graph
  minus ``LastToken``: HF computes the logits of every position).
* ``float``: no quantizer: everything but the 15 linear ``MatMul``s fuses (QuantLinear needs quantized
  weights and a DynamicTokenQuant input).
* ``w8``: int8 per-channel weights only: the 15 ``Quant(W) -> Transpose -> MatMul`` are left (no per-token
  input quantizer).
* ``w8a8-static``: Brevitas ``Int8ActPerTensorFloat`` inputs (per-tensor, static scale): left as
  ``Quant(x, constant scale)`` + ``Quant(W) -> Transpose -> MatMul`` (the flexllm linear quantizes its input
  per token at run time).
* Brevitas' own per-token dynamic quantizers (``Int8PerTokenDynamic`` as ``input_quant``) do not export:
  Brevitas 0.13.4 has no QONNX handler for dynamic activation proxies (``TypeError``).

In every case the fused (or partially fused) graph's qonnx execution equals the original graph's bit for
bit, and both match the PyTorch model (``TORCH_REL_TOL``)."""

import collections
import re

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from flexllm_plugin.frontend import FLEXLLM_DOMAIN, UnsupportedNodeError, fuse_llama, infer_shapes, load_model_copy
from flexllm_plugin.frontend.transformations import FUSION_ORDER, RemoveDeadNodes

torch.set_num_threads(1)

SEQ = 8
HEADS, KV_HEADS, HEAD_DIM, HIDDEN, FFN, VOCAB, LAYERS = 4, 2, 16, 64, 96, 256, 2
TORCH_REL_TOL = 1e-4
PROJS = ["self_attn/q_proj", "self_attn/k_proj", "self_attn/v_proj", "self_attn/o_proj", "mlp/gate_proj",
         "mlp/up_proj", "mlp/down_proj"]
LINEARS = [f"/hf/model/layers.{i}/{p}" for i in range(LAYERS) for p in PROJS] + ["/hf/lm_head"]
QUANT = ["float", "w8", "w8a8-static", "w4a8-tq", "w4a4-tq"]


def _hf_model():
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=HIDDEN, intermediate_size=FFN, num_hidden_layers=LAYERS,
                      num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, head_dim=HEAD_DIM,
                      vocab_size=VOCAB, max_position_embeddings=64, tie_word_embeddings=False,
                      attn_implementation="eager")
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():     # random non-trivial norm weights (HF initialises them to 1)
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.1 * torch.randn_like(p))
    return model


def _quantize(model, quant):
    """Replace every nn.Linear (the LM head included) according to ``quant``."""
    import brevitas.nn as qnn
    from brevitas.quant.scaled_int import Int8ActPerTensorFloat

    from brevitas_models.model import TokenQuant
    from brevitas_models.quantizers import Int8PerTokenDynamic, weight_quant

    def make(lin):
        w_bits = 8 if quant in ("w8", "w8a8-static", "w8a8-dynamic") else 4
        input_quant = {"w8a8-static": Int8ActPerTensorFloat, "w8a8-dynamic": Int8PerTokenDynamic}.get(quant)
        q = qnn.QuantLinear(lin.in_features, lin.out_features, bias=False, weight_quant=weight_quant(w_bits),
                            input_quant=input_quant, return_quant_tensor=False)
        q.weight.data.copy_(lin.weight.data)
        if not quant.endswith("-tq"):
            return q
        tq = TokenQuant("int8" if quant == "w4a8-tq" else "uint4_asym")
        tq.export_mode = True            # brevitas_models.export_ops.dynamic_token_quant
        return nn.Sequential(tq, q)

    def walk(mod):
        for name, child in list(mod.named_children()):
            if isinstance(child, nn.Linear):
                setattr(mod, name, make(child))
            else:
                walk(child)
    if quant != "float":
        walk(model)
    return model.eval()


class _Prefill(nn.Module):
    """input_ids [1, L] -> logits [1, L, vocab]; an all-ones attention mask (constant in the graph: without
    one HF's packed-sequence detection exports ``aten::diff``, which has no ONNX symbolic)."""

    def __init__(self, model):
        super().__init__()
        self.hf = model

    def forward(self, input_ids):
        return self.hf(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), use_cache=False).logits


class _Exports:
    def __init__(self, root):
        self.root = root
        self.cache = {}
        torch.manual_seed(1)
        self.ids = torch.randint(0, VOCAB, (1, SEQ))

    def __call__(self, quant):
        if quant not in self.cache:
            from brevitas.export import export_qonnx
            wrapper = _Prefill(_quantize(_hf_model(), quant)).eval()
            path = self.root / f"hf-{quant}.onnx"
            with torch.no_grad():
                ref = wrapper(self.ids).numpy()
                export_qonnx(wrapper, args=(self.ids,), export_path=str(path), dynamo=False, opset_version=17,
                             input_names=["input_ids"], output_names=["logits"], keep_initializers_as_inputs=False)
            feed = {"input_ids": self.ids.numpy()}
            self.cache[quant] = (str(path), feed, ref, _execute(_raw(str(path)), feed)["logits"])
        return self.cache[quant]


@pytest.fixture(scope="module")
def hf_exports(tmp_path_factory):
    return _Exports(tmp_path_factory.mktemp("frontend_hf"))


def _raw(path):
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.infer_shapes import InferShapes
    return ModelWrapper(path).transform(InferShapes())


def _execute(model, feed):
    from qonnx.core.onnx_exec import execute_onnx
    return execute_onnx(model, feed)


def _fuse_partial(model):
    """``fuse_llama`` without its final check: the fusions applied, whatever is left kept."""
    from qonnx.transformation.infer_datatypes import InferDataTypes
    w = infer_shapes(load_model_copy(model))
    w.set_opset_import(FLEXLLM_DOMAIN, 1)
    for t in list(FUSION_ORDER) + [RemoveDeadNodes]:
        w = w.transform(t(), make_deepcopy=False, cleanup=False)
    return infer_shapes(w).transform(InferDataTypes(), make_deepcopy=False, cleanup=False)


def _rel_err(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


def _fused_counts(n_linear_fused: bool):
    counts = {"Embedding": 1, "RMSNorm": 2 * LAYERS + 1, "SplitHeads": 3 * LAYERS, "RoPE": 2 * LAYERS,
              "QuantAttention": LAYERS, "SwiGLU": LAYERS, "ResidualAdd": 2 * LAYERS}
    if n_linear_fused:
        counts.update(DynamicTokenQuant=4 * LAYERS + 1, QuantLinear=7 * LAYERS + 1)
    return counts


def _leftovers(quant):
    """(name, op) of every node the fusions leave, per linear layer, for the non-fusible quantizations."""
    left = []
    for lin in LINEARS:
        if quant == "float":
            left.append((f"{lin}/MatMul", "MatMul"))
            continue
        left += [(f"{lin}/weight_quant/export_handler/Quant", "Quant"), (f"{lin}/Transpose", "Transpose"),
                 (f"{lin}/MatMul", "MatMul")]
        # one static input Quant per distinct input: q/k/v and gate/up read the first one's (merged)
        if quant == "w8a8-static" and not re.search(r"/(k_proj|v_proj|up_proj)$", lin):
            left.append((f"{lin}/input_quant/export_handler/Quant", "Quant"))
    return sorted(left)


# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("quant", ["w4a8-tq", "w4a4-tq"])
def test_hf_tokenquant_graph_fully_fused(hf_exports, quant):
    path, feed, ref, out_orig = hf_exports(quant)
    fused = fuse_llama(path)
    assert all(n.domain == FLEXLLM_DOMAIN for n in fused.graph.node)
    assert dict(collections.Counter(n.op_type for n in fused.graph.node)) == _fused_counts(True)
    out = _execute(fused, feed)["logits"]
    assert np.array_equal(out, out_orig)                         # bit-exact against the original graph
    assert _rel_err(out, ref) <= TORCH_REL_TOL, _rel_err(out, ref)
    from qonnx.custom_op.registry import getCustomOp
    attrs = {}
    for node in fused.graph.node:
        if node.op_type == "QuantAttention":
            op = getCustomOp(node)
            attrs = {a: op.get_nodeattr(a) for a in ("causal", "softmax_scale", "s_q", "s_k", "s_v", "s_p",
                                                     "num_heads", "num_kv_heads", "head_dim")}
            assert attrs == {"causal": 1, "softmax_scale": HEAD_DIM ** -0.5, "s_q": [], "s_k": [], "s_v": [],
                             "s_p": [], "num_heads": HEADS, "num_kv_heads": KV_HEADS, "head_dim": HEAD_DIM}
        if node.op_type == "RoPE":
            assert fused.get_initializer(node.input[1]).shape == (SEQ, HEAD_DIM)
        if node.op_type == "DynamicTokenQuant":
            kind = getCustomOp(node).get_nodeattr("kind")
            assert kind == ("int8" if quant == "w4a8-tq" else "uint4_asym")
    assert attrs


@pytest.mark.parametrize("quant", ["float", "w8", "w8a8-static"])
def test_hf_partial_fusion_leftovers_and_error(hf_exports, quant):
    """Everything but the linear layers fuses; fuse_llama names exactly the linear layers' nodes."""
    path, feed, ref, out_orig = hf_exports(quant)
    before = onnx.load(path).SerializeToString()
    with pytest.raises(UnsupportedNodeError) as err:
        fuse_llama(path)
    expected = _leftovers(quant)
    assert sorted((name, op) for name, op, _ in err.value.nodes) == expected
    for name, op in expected:
        assert f"node '{name}' (op {op}" in str(err.value)
    if quant != "float":
        assert "(op Quant, domain qonnx.custom_op.general) is not a recognised Llama pattern" in str(err.value)
    assert onnx.load(path).SerializeToString() == before

    partial = _fuse_partial(path)
    counts = collections.Counter(n.op_type for n in partial.graph.node if n.domain == FLEXLLM_DOMAIN)
    assert dict(counts) == _fused_counts(False)
    assert sorted((n.name, n.op_type) for n in partial.graph.node if n.domain != FLEXLLM_DOMAIN) == expected
    if quant == "w8a8-static":               # what makes it unsupported: constant (per-tensor) scales
        for n in partial.graph.node:
            if n.op_type == "Quant" and "input_quant" in n.name:
                assert partial.get_initializer(n.input[1]) is not None
                assert partial.get_initializer(n.input[1]).size == 1
    out = _execute(partial, feed)["logits"]
    assert np.array_equal(out, out_orig)
    assert _rel_err(out, ref) <= TORCH_REL_TOL, _rel_err(out, ref)


def test_hf_non_power_of_two_score_scaling_is_not_fused(hf_exports):
    """HF scales the scores after Q.K^T; only a power-of-two scaling equals QuantAttention's q * scale
    bit for bit (head_dim 16: 0.25). With any other scaling the attention core is left unfused."""
    path, _, _, _ = hf_exports("w4a8-tq")
    model = onnx.load(path)
    consts = {}
    for node in model.graph.node:
        if node.op_type == "Mul" and re.fullmatch(r"/hf/model/layers\.0/self_attn/Mul_\d+", node.name):
            prod = next((p for p in model.graph.node if p.output[0] == node.input[0]), None)
            if prod is not None and prod.op_type == "MatMul":
                consts[node.name] = node.input[1]
    (mul_name, const_name), = consts.items()
    for node in model.graph.node:
        if const_name in node.output:
            node.attribute[0].t.CopyFrom(onnx.numpy_helper.from_array(np.array(0.3, dtype=np.float32)))
    for init in model.graph.initializer:
        if init.name == const_name:
            init.CopyFrom(onnx.numpy_helper.from_array(np.array(0.3, dtype=np.float32), const_name))
    with pytest.raises(UnsupportedNodeError) as err:
        fuse_llama(model)
    left = {name for name, _, _ in err.value.nodes}
    assert mul_name in left and "/hf/model/layers.0/self_attn/Softmax" in left
    assert all(name.startswith("/hf/model/layers.0/self_attn/") for name in left)   # layer 1 fused


def test_hf_brevitas_dynamic_input_quant_does_not_export(tmp_path):
    """Brevitas' per-token dynamic activation quantizers have no QONNX export handler (Brevitas 0.13.4):
    use TokenQuant (w4a8-tq / w4a4-tq) to export per-token dynamic input quantization."""
    from brevitas.export import export_qonnx
    wrapper = _Prefill(_quantize(_hf_model(), "w8a8-dynamic")).eval()
    with torch.no_grad(), pytest.raises(TypeError):
        export_qonnx(wrapper, args=(torch.zeros(1, SEQ, dtype=torch.long),), export_path=str(tmp_path / "x.onnx"),
                     dynamo=False, opset_version=17, input_names=["input_ids"], output_names=["logits"])
