"""The HMT recall of an HMT project through QONNX and hls4ml: the trained W_q / W_k exported as the QONNX
memory graph (``brevitas_models/hmt/export.py``: the fused ``MemoryRecall`` node and the key MatMul, kept in
the project as ``qonnx/hmt/model.onnx``, with the recall projection W_p when the image carries it and the P_0 residual of HMT.RecallResidual), its ``MemoryRecall`` node converted by the FlexLLM ONNX handler
into the hls4ml layer ``FlexMemoryRecall``, whose function template writes the recall's call in the HMT
prefill kernel (``layers/flexllm_memory_recall.h``)."""

from __future__ import annotations

from pathlib import Path


def export_memory_graph(params, slots: int, workdir: Path):
    """The QONNX memory graph of the hardware HMT parameters, shapes inferred, saved as
    ``workdir/hmt/model.onnx``."""
    from qonnx.transformation.infer_shapes import InferShapes

    from brevitas_models.hmt.export import memory_graph

    model = memory_graph(params.w_q, params.w_k, slots, params.w_p,
                         params.initial_row if params.recall_residual else None).transform(InferShapes())
    out = Path(workdir) / "hmt"
    out.mkdir(parents=True, exist_ok=True)
    model.save(str(out / "model.onnx"))
    return model


def memory_recall_layer(model, workdir: Path):
    """The ``MemoryRecall`` node of ``model`` as an hls4ml ``FlexMemoryRecall`` layer (ONNX handler, then a
    one-layer hls4ml ModelGraph with no optimizer flows: the layer is not part of a decoder stage)."""
    from hls4ml.model.graph import ModelGraph

    from ..backend.registration import ensure_registered
    from ..converters.onnx_handlers import parse_memory_recall

    ensure_registered()
    nodes = [n for n in model.graph.node if n.op_type == "MemoryRecall"]
    if len(nodes) != 1:
        raise ValueError(f"the HMT memory graph must hold one MemoryRecall node, found {len(nodes)}")
    layer = parse_memory_recall(nodes[0], list(nodes[0].input), None, model.graph)
    shapes = {vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim] for vi in model.graph.input}
    inputs = [{"name": name, "class_name": "Input", "input_shape": shapes[name]} for name in layer["inputs"]]
    cfg = {"Backend": "FlexLLM", "OutputDir": str(Path(workdir) / "hmt_hls4ml"), "ProjectName": "hmt_recall",
           "HLSConfig": {"Flows": [], "Model": {"Precision": "float", "ReuseFactor": 1}}}
    graph = ModelGraph.from_layer_list(cfg, inputs + [layer], inputs=layer["inputs"], outputs=[layer["name"]])
    return graph.graph[layer["name"]]


def kernel_recall_call(params, slots: int, workdir: Path) -> str:
    """The recall's call in the HMT prefill kernel, from the hls4ml layer's template: W_q streamed from
    ``hmt_params``, the summary state, the ring's keys and memories in URAM, the filled slots, the mix."""
    from ..backend.passes.templates import MemoryRecallFunctionTemplate

    layer = memory_recall_layer(export_memory_graph(params, slots, workdir), workdir)
    if layer.get_attr("hidden") != params.hidden_size or layer.get_attr("slots") != slots:
        raise AssertionError("the converted MemoryRecall layer does not have the HMT sizes")
    return MemoryRecallFunctionTemplate().call(layer, w_q="hmt_params + HMT_WQ_OFF", summary="state", keys="ring_key",
                                               memories="ring_mem", filled="filled", output="mix")
