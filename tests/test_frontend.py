"""flexllm frontend: fusing exported Llama stage graphs into flexllm CustomOps (flexllm_plugin.frontend).

Every fused graph is executed by qonnx and compared with the original graph (bit-exact: each op's
execute_node performs the replaced nodes' float operations in the same order, the implementation-
dependent ones as single onnxruntime nodes exactly as qonnx runs them) and with the PyTorch reference
(reference.npz, within 1e-4 relative like tests/test_export.py)."""

import collections
import time

import numpy as np
import onnx
import pytest
import torch
from onnx import helper, numpy_helper

from brevitas_models.export import export_stage
from brevitas_models.export_ops import hadamard_constant
from flexllm_plugin.frontend import (FLEXLLM_DOMAIN, FUSED_OP_TYPES, UnsupportedNodeError, check_fully_fused,
                                     fuse_llama)
from tests.helpers import text_tokens, tiny_model, tiny_weights

torch.set_num_threads(1)

ARCH = tiny_weights().arch
REL_TOL = 1e-4
PRESETS = {"flexllm-w4a4": {}, "w8a8": {"rotation": "none"}}
SEQ = {"prefill": 8, "decode": 7}          # prefill L = 8; decode P = 7 (position 7)
CASES = [(p, s, n) for p in PRESETS for s in ("prefill", "decode") for n in (1, 2)]


def _case_id(case):
    return "-".join(map(str, case))


class _Exports:
    """Tiny-model stage exports, built on first use and shared by the module's tests."""

    def __init__(self, root):
        self.root = root
        self.models = {}
        self.infos = {}

    def __call__(self, preset, stage, layers):
        key = (preset, stage, layers)
        if key not in self.infos:
            if preset not in self.models:
                self.models[preset] = tiny_model(preset, **PRESETS[preset])
            out = self.root / f"{preset}-{stage}{layers}"
            self.infos[key] = export_stage(self.models[preset], stage, out, text_tokens()[:64],
                                           seq_len=SEQ[stage], layers=layers)
        return self.infos[key]

    def original_outputs(self, preset, stage, layers):
        """qonnx execution of the raw exported graph on the reference inputs (cached)."""
        key = ("out", preset, stage, layers)
        if key not in self.infos:
            info = self(preset, stage, layers)
            ref = dict(np.load(info["reference"]))
            self.infos[key] = _execute(_raw_wrapper(info["onnx"]), {n: ref[n] for n in info["input_names"]})
        return self.infos[key]


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    return _Exports(tmp_path_factory.mktemp("frontend"))


def _execute(model, feed):
    from qonnx.core.onnx_exec import execute_onnx
    return execute_onnx(model, feed)


def _raw_wrapper(path):
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.infer_shapes import InferShapes
    return ModelWrapper(path).transform(InferShapes())


def _expected_counts(preset, layers):
    n = layers
    counts = {"Embedding": 1, "LastToken": 1, "RMSNorm": 2 * n + 1, "DynamicTokenQuant": 4 * n + 1,
              "QuantLinear": 7 * n + 1, "SplitHeads": 3 * n, "RoPE": 2 * n, "QuantAttention": n, "SwiGLU": n,
              "ResidualAdd": 2 * n}
    if preset == "flexllm-w4a4":            # rotation: online Hadamard R4 before down_proj
        counts["OnlineHadamard"] = n
    return counts


def _compare(orig_out, fused_out, names_orig, names_fused):
    """Max abs / rel difference per output; bit-exact expected."""
    diffs = {}
    for a, b in zip(names_orig, names_fused):
        x, y = orig_out[a], fused_out[b]
        assert x.shape == y.shape and x.dtype == y.dtype, (a, x.shape, y.shape, x.dtype, y.dtype)
        diffs[a] = float(np.abs(x - y).max()) if x.size else 0.0
    return diffs


def _rel_err(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


# ------------------------------------------------------------------------------------------------
# fused graph == original graph == PyTorch reference
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_fused_graph_matches_original(exports, case):
    preset, stage, layers = case
    info = exports(preset, stage, layers)
    ref = dict(np.load(info["reference"]))
    original = onnx.load(info["onnx"])
    t0 = time.perf_counter()
    fused = fuse_llama(info["onnx"])
    fuse_s = time.perf_counter() - t0

    # only flexllm ops, with the expected counts
    assert all(n.domain == FLEXLLM_DOMAIN for n in fused.graph.node)
    counts = collections.Counter(n.op_type for n in fused.graph.node)
    assert dict(counts) == _expected_counts(preset, layers), dict(counts)
    # graph interface unchanged
    for a, b in ((original.graph.input, fused.graph.input), (original.graph.output, fused.graph.output)):
        assert [(v.name, v.type) for v in a] == [(v.name, v.type) for v in b]

    feed = {name: ref[name] for name in info["input_names"]}
    out_orig = exports.original_outputs(preset, stage, layers)
    out_fused = _execute(fused, feed)
    diffs = _compare(out_orig, out_fused, info["output_names"], info["output_names"])
    assert all(d == 0.0 for d in diffs.values()), f"fused != original (max abs diff): {diffs}"
    for name in info["output_names"]:
        assert np.array_equal(out_orig[name], out_fused[name]), name
        assert _rel_err(out_fused[name], ref[name]) <= REL_TOL, (name, _rel_err(out_fused[name], ref[name]))
    assert fuse_s < 30


@pytest.mark.parametrize("case", [("flexllm-w4a4", "decode", 2), ("w8a8", "prefill", 1)], ids=_case_id)
def test_fused_after_qonnx_cleanup(exports, case):
    """cleanup_model renames the graph I/O, folds the weight Transposes into [in, out] initialisers and
    reorders commutative operands: the fusion is structural, so it gives the same graph. (Cleanup changes
    no arithmetic: the fused cleaned graph reproduces the raw original graph's qonnx outputs bit for bit.)"""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.cleanup import cleanup_model
    preset, stage, layers = case
    info = exports(preset, stage, layers)
    ref = dict(np.load(info["reference"]))
    cleaned = cleanup_model(ModelWrapper(info["onnx"]))
    fused = fuse_llama(cleaned)
    counts = collections.Counter(n.op_type for n in fused.graph.node)
    assert dict(counts) == _expected_counts(preset, layers), dict(counts)
    # QuantLinear weights are [out, in] again, scales [out, 1]
    for node in fused.graph.node:
        if node.op_type == "QuantLinear":
            w, s = fused.get_initializer(node.input[1]), fused.get_initializer(node.input[2])
            assert w.ndim == 2 and s.shape == (w.shape[0], 1)
    in_names = [vi.name for vi in cleaned.graph.input]
    out_names = [vi.name for vi in cleaned.graph.output]
    assert [vi.name for vi in fused.graph.input] == in_names
    assert [vi.name for vi in fused.graph.output] == out_names
    feed = {vi: ref[name] for vi, name in zip(in_names, info["input_names"])}
    out_orig, out_fused = exports.original_outputs(preset, stage, layers), _execute(fused, feed)
    for vi, name in zip(out_names, info["output_names"]):
        assert np.array_equal(out_orig[name], out_fused[vi]), name
        assert _rel_err(out_fused[vi], ref[name]) <= REL_TOL


# ------------------------------------------------------------------------------------------------
# node interface
# ------------------------------------------------------------------------------------------------

def _attrs(node):
    from qonnx.custom_op.registry import getCustomOp
    inst = getCustomOp(node)
    return {name: inst.get_nodeattr(name) for name in inst.get_nodeattr_types()}


@pytest.mark.parametrize("preset", list(PRESETS))
def test_node_interface(exports, preset):
    heads, kvh, d = ARCH.num_heads, ARCH.num_kv_heads, ARCH.head_dim
    quant_kv = preset == "flexllm-w4a4"
    for stage in ("prefill", "decode"):
        fused = fuse_llama(exports(preset, stage, 1)["onnx"])
        nodes = collections.defaultdict(list)
        for n in fused.graph.node:
            nodes[n.op_type].append(n)
        (att,) = nodes["QuantAttention"]
        a = _attrs(att)
        assert len(att.input) == (3 if stage == "prefill" else 5)
        assert len(att.output) == 3
        if stage == "decode":
            assert list(att.input[3:]) == ["past_key_0", "past_value_0"]
            assert list(att.output[1:]) == ["new_key_0", "new_value_0"]
        else:
            assert list(att.output[1:]) == ["present_key_0", "present_value_0"]
        assert a["causal"] == (1 if stage == "prefill" else 0)
        assert a["softmax_scale"] == pytest.approx(d ** -0.5)
        assert (a["num_heads"], a["num_kv_heads"], a["head_dim"]) == (heads, kvh, d)
        if quant_kv:
            assert len(a["s_q"]) == heads and len(a["s_p"]) == heads
            assert len(a["s_k"]) == kvh and len(a["s_v"]) == kvh
            assert (a["qkv_bits"], a["p_bits"]) == (8, 8)
        else:                                # w8a8: no Q/K/V/P quantizers -> empty scale lists
            assert a["s_q"] == a["s_k"] == a["s_v"] == a["s_p"] == []
        for rope in nodes["RoPE"]:
            cos = fused.get_initializer(rope.input[1])
            if stage == "prefill":
                assert len(rope.input) == 3 and cos.shape == (SEQ["prefill"], d)
            else:
                assert len(rope.input) == 4 and rope.input[3] == "position"
                assert cos.shape == (ARCH.max_position_embeddings, d)
        for dtq in nodes["DynamicTokenQuant"]:
            a = _attrs(dtq)
            assert a["range_min"] == pytest.approx(1e-10)
            if quant_kv:
                assert (a["kind"], a["bit_width"], a["signed"]) == ("uint4_asym", 4, 0)
            else:
                assert (a["kind"], a["bit_width"], a["signed"]) == ("int8", 8, 1)
        for ql in nodes["QuantLinear"]:
            assert fused.find_producer(ql.input[0]).op_type == "DynamicTokenQuant"
            w, s = fused.get_initializer(ql.input[1]), fused.get_initializer(ql.input[2])
            assert s.shape == (w.shape[0], 1)
            assert _attrs(ql)["w_bits"] == (4 if quant_kv else 8) and _attrs(ql)["narrow"] == 1
        for had in nodes["OnlineHadamard"]:
            mat = fused.get_initializer(had.input[1])
            assert _attrs(had)["n"] == ARCH.intermediate_size
            assert np.array_equal(mat, hadamard_constant(ARCH.intermediate_size).numpy())
        (emb,) = nodes["Embedding"]
        assert emb.input[0] == "input_ids" and fused.get_initializer(emb.input[1]).shape == (ARCH.vocab_size,
                                                                                             ARCH.hidden_size)
        for sh in nodes["SplitHeads"]:
            assert _attrs(sh)["num_heads"] in (heads, kvh) and _attrs(sh)["head_dim"] == d


def test_registry_resolves_every_op():
    from qonnx.custom_op.registry import getCustomOp
    import flexllm_plugin.frontend.ops as ops
    assert set(FUSED_OP_TYPES) == set(ops.custom_op) == set(ops.__all__)
    for op_type in FUSED_OP_TYPES:
        node = helper.make_node(op_type, ["x"], ["y"], domain=FLEXLLM_DOMAIN)
        assert type(getCustomOp(node)) is ops.custom_op[op_type]
        assert type(getCustomOp(node, onnx_opset_version=1)) is ops.custom_op[op_type]


def test_shape_inference_matches_execution(exports):
    """qonnx InferShapes on the fused graph with all intermediate value_info removed gives every tensor
    the shape its producer's execute_node writes; verify_node passes for every node."""
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.custom_op.registry import getCustomOp
    from qonnx.transformation.infer_shapes import InferShapes
    for preset, stage in (("flexllm-w4a4", "decode"), ("w8a8", "prefill")):
        info = exports(preset, stage, 2)
        fused = fuse_llama(info["onnx"])
        for node in fused.graph.node:
            getCustomOp(node).verify_node()
        del fused.graph.value_info[:]
        fused = fused.transform(InferShapes())
        assert fused.check_all_tensor_shapes_specified()
        assert {n.op_type for n in fused.graph.node} <= set(FUSED_OP_TYPES)   # CustomOps restored
        ref = dict(np.load(info["reference"]))
        ctx = execute_onnx(fused, {n: ref[n] for n in info["input_names"]}, return_full_exec_context=True)
        produced = {o for n in fused.graph.node for o in n.output}
        for name in produced:
            assert list(ctx[name].shape) == fused.get_tensor_shape(name), name
            assert ctx[name].dtype == np.float32, name


# ------------------------------------------------------------------------------------------------
# unsupported graphs
# ------------------------------------------------------------------------------------------------

def _insert_unary(model: onnx.ModelProto, tensor: str, op_type: str, name: str) -> None:
    """Insert ``op_type`` on ``tensor``: all its consumers read the new node's output instead."""
    new_out = tensor + "_" + op_type.lower()
    for node in model.graph.node:
        for i, inp in enumerate(node.input):
            if inp == tensor:
                node.input[i] = new_out
    pos = next(i for i, n in enumerate(model.graph.node) if tensor in n.output) + 1
    model.graph.node.insert(pos, helper.make_node(op_type, [tensor], [new_out], name=name))


def test_unsupported_node_is_named_and_input_untouched(exports):
    info = exports("flexllm-w4a4", "prefill", 1)
    model = onnx.load(info["onnx"])
    # after the final norm's input (the LastToken Gather) and after layer 0's first residual Add
    last = next(n for n in model.graph.node if n.op_type == "Gather" and n.input[0] != "embed_tokens.weight")
    _insert_unary(model, last.output[0], "Erf", "/bad/Erf")
    res = next(n for n in model.graph.node if n.name == "/layers.0/Add")
    _insert_unary(model, res.output[0], "Sin", "/layers.0/bad/Sin")
    before = model.SerializeToString()
    with pytest.raises(UnsupportedNodeError) as err:
        fuse_llama(model)
    msg = str(err.value)
    assert "node '/bad/Erf' (op Erf) is not a recognised Llama pattern" in msg
    assert "node '/layers.0/bad/Sin' (op Sin) is not a recognised Llama pattern" in msg
    assert sorted(err.value.nodes) == [("/bad/Erf", "Erf", ""), ("/layers.0/bad/Sin", "Sin", "")]
    assert isinstance(err.value, ValueError)
    assert model.SerializeToString() == before            # the caller's model is not modified
    # a ModelWrapper input is not modified either
    from qonnx.core.modelwrapper import ModelWrapper
    wrapper = ModelWrapper(model)
    before = wrapper.model.SerializeToString()
    with pytest.raises(UnsupportedNodeError):
        fuse_llama(wrapper)
    assert wrapper.model.SerializeToString() == before


def test_matmul_with_non_hadamard_constant_is_left_unsupported(exports):
    info = exports("flexllm-w4a4", "decode", 1)
    model = onnx.load(info["onnx"])
    init = next(t for t in model.graph.initializer if t.name.startswith("hadamard_"))
    mat = numpy_helper.to_array(init).copy()
    mat[0, 0] = np.nextafter(mat[0, 0], np.float32(2.0))    # one ulp off
    init.CopyFrom(numpy_helper.from_array(mat, init.name))
    with pytest.raises(UnsupportedNodeError) as err:
        fuse_llama(model)
    assert err.value.nodes == [("/layers.0/mlp/online_hadamard/MatMul", "MatMul", "")]
    assert "(op MatMul)" in str(err.value)


def test_check_fully_fused_accepts_fused_graph(exports):
    fused = fuse_llama(onnx.load(exports("w8a8", "decode", 1)["onnx"]))    # ModelProto input
    check_fully_fused(fused)
    fused.graph.node[0].domain = ""
    with pytest.raises(UnsupportedNodeError, match=r"\(op Embedding\) is not a recognised Llama pattern"):
        check_fully_fused(fused)


def test_clipped_and_overridden_quantizers_fuse_bit_exact(tmp_path):
    """Quantization.InputClipRatios and InputQuantOverrides: the clipped uint4 quantizer (Mul(ReduceMax, r),
    Mul(ReduceMin, r)) fuses into DynamicTokenQuant with clip = r, the int8 sites into int8 ones, each site
    with its own kind and ratio; the fused graph executes bit for bit like the exported one."""
    model = tiny_model("flexllm-w4a4", input_quant_overrides={"down_proj": "int8", "lm_head": "int8"},
                       input_clip_ratios={"q_proj": 0.9, "gate_proj": 0.8})
    info = export_stage(model, "prefill", tmp_path, text_tokens()[:64], seq_len=SEQ["prefill"], layers=1)
    fused = fuse_llama(info["onnx"])
    assert dict(collections.Counter(n.op_type for n in fused.graph.node)) == _expected_counts("flexllm-w4a4", 1)
    quants = [n for n in fused.graph.node if n.op_type == "DynamicTokenQuant"]
    attrs = [{a.name: helper.get_attribute_value(a) for a in n.attribute} for n in quants]
    got = [(a["kind"].decode(), round(float(a.get("clip", 1.0)), 6)) for a in attrs]
    # graph order: q/k/v input, o_proj input, gate/up input, down_proj input, LM head input
    assert got == [("uint4_asym", 0.9), ("uint4_asym", 1.0), ("uint4_asym", 0.8), ("int8", 1.0), ("int8", 1.0)]
    ref = dict(np.load(info["reference"]))
    feed = {name: ref[name] for name in info["input_names"]}
    out_orig = _execute(_raw_wrapper(info["onnx"]), feed)
    out_fused = _execute(fused, feed)
    for name in info["output_names"]:
        assert np.array_equal(out_orig[name], out_fused[name]), name
