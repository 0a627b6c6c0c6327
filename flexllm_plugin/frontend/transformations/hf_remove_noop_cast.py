"""Remove no-op ``Cast`` nodes of Hugging Face exports.

HF Llama casts to the compute dtype and back, which for a float32 model exports as ``Cast(to=FLOAT)`` of
float32 tensors: ``hidden_states.to(torch.float32)`` at the start of every ``LlamaRMSNorm`` (whose output
is also the residual branch) and ``.to(input_dtype)`` before its weight Mul, ``softmax(..., dtype=float32)
.to(query.dtype)`` in eager attention, ``cos.to(x.dtype)`` in the rotary embedding. A Cast to the type
its input already has is the identity (bit for bit): its consumers read its input instead.

A Cast whose output is a graph output is kept (the graph interface must not change), as is any Cast
whose input element type is unknown or different."""

from __future__ import annotations

from qonnx.transformation.base import Transformation

from ._graph import attr, remove_dead_nodes, set_nodes


class HFRemoveNoOpCast(Transformation):
    def apply(self, model):
        graph = model.graph
        types = {vi.name: vi.type.tensor_type.elem_type
                 for vi in list(graph.input) + list(graph.value_info) + list(graph.output)}
        types.update({t.name: t.data_type for t in graph.initializer})
        outputs = {o.name for o in graph.output}
        rename = {}
        keep = []
        for node in graph.node:
            for i, name in enumerate(node.input):
                if name in rename:
                    node.input[i] = rename[name]
            if (node.op_type == "Cast" and node.domain in ("", "ai.onnx") and node.output[0] not in outputs
                    and types.get(node.input[0], 0) != 0 and types.get(node.input[0]) == attr(node, "to")):
                rename[node.output[0]] = node.input[0]
                continue
            keep.append(node)
        if not rename:
            return model, False
        set_nodes(graph, keep)
        remove_dead_nodes(model)
        return model, False
