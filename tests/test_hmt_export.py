"""The HMT memory ops in QONNX (brevitas_models/hmt/export.py): the fused MemoryRecall node and the key
MatMul executed by qonnx against the PyTorch einsum recall (brevitas_models/hmt/memory.py, fp32 tolerance)
and the hardware golden (bit for bit: the node executes the contract)."""

import numpy as np
import pytest
import torch

from brevitas_models.hmt.export import memory_graph
from brevitas_models.hmt.golden_recall import memory_key, memory_recall
from brevitas_models.hmt.memory import recall


@pytest.mark.parametrize("filled", [1, 3, 4])
def test_memory_recall_node_executes_like_the_references(filled):
    from qonnx.core.onnx_exec import execute_onnx

    rng = np.random.default_rng(filled)
    d, n = 48, 4
    w_q = (rng.standard_normal((d, d)) / np.sqrt(d)).astype(np.float32)
    w_k = (rng.standard_normal((d, d)) / np.sqrt(d)).astype(np.float32)
    mems = (rng.standard_normal((n, d)) * 2).astype(np.float32)
    keys = (mems.astype(np.float64) @ w_k.T.astype(np.float64)).astype(np.float32)
    keys[filled:], mems[filled:] = 1e30, np.nan            # empty slots must never be read
    s = (rng.standard_normal(d) * 2).astype(np.float32)
    model = memory_graph(w_q, w_k, n)
    out = execute_onnx(model, {"summary": s[None], "keys": keys, "memories": mems,
                               "filled": np.array([filled], dtype=np.int64), "new_memory": mems[:1]})
    got = out["recalled"][0]
    assert got.view(np.uint32).tolist() == memory_recall(w_q, s, keys, mems, filled).view(np.uint32).tolist()
    mask = torch.arange(n) < filled
    ref = recall(torch.from_numpy(s)[None], torch.from_numpy(np.where(mask[:, None].numpy(), keys, 0))[None],
                 torch.from_numpy(np.where(mask[:, None].numpy(), mems, 0))[None], mask, torch.from_numpy(w_q))
    np.testing.assert_allclose(got, ref[0].numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["new_key"][0], memory_key(w_k, mems[0]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["new_key"][0], (torch.from_numpy(mems[:1]) @ torch.from_numpy(w_k).t())[0].numpy(),
                               rtol=1e-6, atol=1e-6)


def test_memory_graph_checks_shapes():
    with pytest.raises(ValueError, match="W_q"):
        memory_graph(np.zeros((4, 4), np.float32), np.zeros((4, 5), np.float32), 2)
    with pytest.raises(ValueError, match="W_p"):
        memory_graph(np.zeros((4, 4), np.float32), np.zeros((4, 4), np.float32), 2, np.zeros((4, 3), np.float32))


@pytest.mark.parametrize("residual", [False, True])
def test_recall_projection_node_maps_the_mix(residual):
    """With W_p (the image's recall projection: rotation and / or the learned recall scale) the graph also
    gives the input row W_p mix, against the golden gemv of the mix (fp32 tolerance: onnx MatMul sums in
    its own order)."""
    from qonnx.core.onnx_exec import execute_onnx

    from brevitas_models.hmt.golden_recall import gemv

    rng = np.random.default_rng(5)
    d, n = 32, 3
    w_q, w_k, w_p = ((rng.standard_normal((3, d, d)) / np.sqrt(d))).astype(np.float32)
    mems = (rng.standard_normal((n, d)) * 2).astype(np.float32)
    keys = np.stack([memory_key(w_k, m) for m in mems])
    s = (rng.standard_normal(d) * 2).astype(np.float32)
    p0 = (rng.standard_normal(d)).astype(np.float32)
    out = execute_onnx(memory_graph(w_q, w_k, n, w_p, p0 if residual else None), {"summary": s[None], "keys": keys, "memories": mems,
                                                        "filled": np.array([n], dtype=np.int64),
                                                        "new_memory": mems[:1]})
    mix = memory_recall(w_q, s, keys, mems, n)
    assert out["recalled"][0].view(np.uint32).tolist() == mix.view(np.uint32).tolist()
    want = gemv(w_p, mix) + (p0 if residual else 0)
    np.testing.assert_allclose(out["recalled_row"][0], want, rtol=1e-5, atol=1e-5 * np.abs(mix).max())
    rows = execute_onnx(memory_graph(w_q, w_k, n, None, p0), {"summary": s[None], "keys": keys, "memories": mems,
                                                              "filled": np.array([n], dtype=np.int64),
                                                              "new_memory": mems[:1]})["recalled_row"][0]
    assert rows.view(np.uint32).tolist() == (p0 + mix).view(np.uint32).tolist()     # W_p absent: P_0 + mix


def _hls_memory_recall_layer(model, tmp_path):
    """The QONNX MemoryRecall node through the FlexLLM ONNX handler into an hls4ml layer (FlexMemoryRecall)."""
    from hls4ml.model.graph import ModelGraph
    from qonnx.transformation.infer_shapes import InferShapes

    from flexllm_plugin.backend.registration import ensure_registered
    from flexllm_plugin.converters.onnx_handlers import parse_memory_recall

    ensure_registered()
    model = model.transform(InferShapes())
    (node,) = [n for n in model.graph.node if n.op_type == "MemoryRecall"]
    layer = parse_memory_recall(node, list(node.input), None, model.graph)
    shapes = {vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim] for vi in model.graph.input}
    inputs = [{"name": name, "class_name": "Input", "input_shape": shapes[name]} for name in layer["inputs"]]
    cfg = {"Backend": "FlexLLM", "OutputDir": str(tmp_path / "hls"), "ProjectName": "recall",
           "Part": "xcu280-fsvh2892-2L-e", "HLSConfig": {"Flows": [], "Model": {"Precision": "float", "ReuseFactor": 1}}}
    graph = ModelGraph.from_layer_list(cfg, inputs + [layer], inputs=layer["inputs"], outputs=[layer["name"]])
    return graph.graph[layer["name"]]


def test_hls_memory_recall_module_matches_the_golden(tmp_path):
    """QONNX -> ONNX handler -> hls4ml layer -> the template's call of layers/flexllm_memory_recall.h, compiled
    with g++ (the contract's flags) and run: bit-exact with the golden recall (and with qonnx execution)."""
    import shutil
    import subprocess
    from pathlib import Path

    import hls4ml
    from qonnx.core.onnx_exec import execute_onnx

    from flexllm_plugin.backend.passes.templates import MemoryRecallFunctionTemplate

    cxx = shutil.which("g++")
    if cxx is None:
        pytest.skip("g++ not available")
    rng = np.random.default_rng(5)
    d, n, filled = 40, 3, 2
    w_q = (rng.standard_normal((d, d)) / np.sqrt(d)).astype(np.float32)
    w_k = (rng.standard_normal((d, d)) / np.sqrt(d)).astype(np.float32)
    mems = (rng.standard_normal((n, d)) * 2).astype(np.float32)
    keys = np.stack([memory_key(w_k, m) for m in mems])
    s = (rng.standard_normal(d) * 2).astype(np.float32)
    model = memory_graph(w_q, w_k, n)
    layer = _hls_memory_recall_layer(model, tmp_path)
    template = MemoryRecallFunctionTemplate()
    call = template.format(layer)
    assert call.startswith(f"flexllm::memory_recall<{n}, {d}, 16>(")
    out_name = layer.get_output_variable().name
    names = [layer.get_input_variable(i).name for i in layer.inputs]
    inc = tmp_path / "inc"
    inc.mkdir()
    (inc / "flexllm").symlink_to(Path(__file__).resolve().parent.parent / "layers")
    includes = "\n".join(f'#include "{h}"' for h in template.include_header)
    (tmp_path / "drv.cpp").write_text(f"""{includes}
#include <cstdio>
static float {layer.name}_w_q[{d * d}], {names[0]}[{d}], {names[1]}[{n * d}], {names[2]}[{n * d}], {out_name}[{d}];
static int {names[3]}[1];
int main() {{
    if (std::fread({layer.name}_w_q, 4, {d * d}, stdin) != {d * d} || std::fread({names[0]}, 4, {d}, stdin) != {d} ||
        std::fread({names[1]}, 4, {n * d}, stdin) != {n * d} || std::fread({names[2]}, 4, {n * d}, stdin) != {n * d} ||
        std::fread({names[3]}, 4, 1, stdin) != 1) return 2;
    {call}
    std::fwrite({out_name}, 4, {d}, stdout);
    return 0;
}}
""")
    ap = Path(hls4ml.__file__).parent / "templates" / "vivado" / "ap_types"
    exe = tmp_path / "drv"
    subprocess.run([cxx, "-std=c++17", "-O2", "-ffp-contract=off", "-fno-fast-math", f"-I{inc}", f"-I{inc / 'flexllm'}",
                    "-isystem", str(ap), str(tmp_path / "drv.cpp"), "-o", str(exe)], check=True)
    payload = w_q.tobytes() + s.tobytes() + keys.tobytes() + mems.tobytes() + np.int32(filled).tobytes()
    r = subprocess.run([str(exe)], input=payload, capture_output=True, check=True)
    hls = np.frombuffer(r.stdout, dtype=np.float32)
    gold = memory_recall(w_q, s, keys, mems, filled)
    assert hls.view(np.uint32).tolist() == gold.view(np.uint32).tolist()
    q = execute_onnx(model, {"summary": s[None], "keys": keys, "memories": mems,
                             "filled": np.array([filled], dtype=np.int64), "new_memory": mems[:1]})
    assert q["recalled"][0].view(np.uint32).tolist() == hls.view(np.uint32).tolist()
