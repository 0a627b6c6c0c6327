"""Constant folding for Hugging Face exports (``transformers`` models through ``brevitas.export.export_qonnx``).

Our exporter (``brevitas_models.export``) folds its static subgraphs itself; an HF ``LlamaForCausalLM``
export keeps several subgraphs that depend on constants only (with static shapes):

* the RoPE tables: ``Cos(freqs) -> Mul(attention_scaling) -> Cast`` and the same with ``Sin`` (the
  ``position_ids @ inv_freq`` product is already folded by the exporter, ``Cos`` / ``Sin`` are not);
* the causal mask: ``ConstantOfShape / LessOrEqual / And / Cast / Gather / Reshape / Expand / Where``;
* the repeat-kv ``Expand`` shape: ``ConstantOfShape / Mul / Equal / Where``;
* ``Shape`` of a tensor with a static shape;
* ``Identity`` of an initialiser (the TorchScript exporter deduplicates equal parameters, e.g. all-ones
  norm weights, into Identity nodes): its consumers read the initialiser.

``HFFoldConstants`` replaces every standard-domain node whose inputs are all constants (initialisers or
``Constant`` outputs) by an initialiser holding its output, in one pass in graph order (so whole
chains fold). Each node is evaluated by onnxruntime as ONE single-node model with every input fed at
run time, as qonnx's ``execute_node`` runs it, so the folded values are the bits qonnx execution of the
original graph computes. QONNX ``Quant`` nodes (weights) are never folded, nor nodes with several
outputs, subgraphs or random outputs, graph outputs, or results above :data:`MAX_FOLD_BYTES`. When
something was folded, shapes are inferred again (shapes computed by the folded nodes become static).
On graphs of our exporter nothing is left to fold (the pass is a no-op there)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as rt
from onnx import helper, numpy_helper
from qonnx.transformation.base import Transformation

from ..ops._base import ONNX_OPSET
from ..shapes import infer_shapes
from ._graph import GraphIndex, attr, remove_dead_nodes, set_nodes

MAX_FOLD_BYTES = 1 << 26        # 64 MiB: a [2048, 2048] float32 mask fits, a weight-sized copy may not
_NO_FOLD = {"Constant", "RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial",
            "Bernoulli", "Dropout", "If", "Loop", "Scan", "SequenceConstruct"}


def _run_single_node(node: onnx.NodeProto, values, out_type: int, opset: int) -> np.ndarray:
    """Output of ``node`` on ``values`` (one per input name, None for an omitted optional input)."""
    single = onnx.NodeProto()
    single.CopyFrom(node)
    del single.input[:], single.output[:]
    feeds = {}
    for val in values:
        if val is None:
            single.input.append("")
        else:
            name = f"in{len(feeds)}"
            feeds[name] = val
            single.input.append(name)
    single.output.append("out")
    vis = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), list(a.shape))
           for n, a in feeds.items()]
    graph = helper.make_graph([single], "single-node-fold", vis, [helper.make_tensor_value_info("out", out_type, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    opts = rt.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return rt.InferenceSession(model.SerializeToString(), opts).run(None, feeds)[0]


class HFFoldConstants(Transformation):
    def apply(self, model):
        graph = model.graph
        idx = GraphIndex(model)
        opset = next((o.version for o in model.model.opset_import if o.domain in ("", "ai.onnx")), ONNX_OPSET)
        elem_types = {vi.name: vi.type.tensor_type.elem_type
                      for vi in list(graph.value_info) + list(graph.output) + list(graph.input)}
        folded = {}
        keep, new_inits = [], []

        def value(name):
            if name in folded:
                return folded[name]
            return idx.const(name)

        rename = {}
        for node in graph.node:
            for i, name in enumerate(node.input):
                if name in rename:
                    node.input[i] = rename[name]
            out = node.output[0] if len(node.output) == 1 else None
            if (node.op_type == "Identity" and node.domain in ("", "ai.onnx") and idx.is_init(node.input[0])
                    and out not in idx.graph_outputs):
                rename[out] = node.input[0]      # deduplicated parameter: read the initialiser (no copy)
                continue
            ok = (node.domain in ("", "ai.onnx") and node.op_type not in _NO_FOLD and out
                  and out not in idx.graph_outputs and not any(a.type in (5, 10) for a in node.attribute))
            val = None
            if ok and node.op_type == "Shape":
                shape = idx.shape(node.input[0])
                if shape is not None:
                    start, end = attr(node, "start", 0), attr(node, "end", len(shape))
                    val = np.array(shape, dtype=np.int64)[start:end]
            elif ok and node.input and all(n in folded or idx.is_const(n) for n in node.input if n):
                out_type = elem_types.get(out, 0)
                if out_type:
                    val = _run_single_node(node, [value(n) if n else None for n in node.input], out_type, opset)
            if val is None or val.nbytes > MAX_FOLD_BYTES:
                keep.append(node)
                continue
            folded[out] = val
            new_inits.append(numpy_helper.from_array(np.asarray(val), out))
        if not new_inits and not rename:
            return model, False
        set_nodes(graph, keep)
        graph.initializer.extend(new_inits)
        remove_dead_nodes(model)
        # shapes computed from the folded tensors (e.g. the Expand output) are now static: infer again
        del graph.value_info[:]
        infer_shapes(model)
        return model, False
