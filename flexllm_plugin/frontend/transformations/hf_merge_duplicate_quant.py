"""Merge duplicate QONNX ``Quant`` nodes of Hugging Face exports.

An HF attention (MLP) block has one linear layer per projection, so a Brevitas input quantizer on each
of ``q_proj`` / ``k_proj`` / ``v_proj`` (``gate_proj`` / ``up_proj``) quantizes the same tensor three
(two) times; Brevitas' onnxoptimizer passes then merge their (identical) per-token scale subgraphs, which
leaves several ``Quant`` nodes with the same inputs and attributes. Our exporter quantizes such a shared
input once. ``HFMergeDuplicateQuant`` keeps the first of the ``Quant`` nodes that have identical inputs
and attributes and makes the others' consumers read its output (the same deterministic computation on
the same tensors: bit-exact), so the per-token quantizer subgraph has a single consumer as
``FuseDynamicTokenQuant`` requires. ``Quant`` nodes whose output is a graph output are left alone."""

from __future__ import annotations

from qonnx.transformation.base import Transformation

from ._graph import QONNX_QUANT_DOMAINS, remove_dead_nodes, set_nodes


class HFMergeDuplicateQuant(Transformation):
    def apply(self, model):
        graph = model.graph
        outputs = {o.name for o in graph.output}
        first = {}
        rename = {}
        keep = []
        for node in graph.node:
            for i, name in enumerate(node.input):
                if name in rename:
                    node.input[i] = rename[name]
            if node.op_type == "Quant" and node.domain in QONNX_QUANT_DOMAINS and len(node.output) == 1 \
                    and node.output[0] not in outputs:
                key = (node.domain, tuple(node.input),
                       tuple(sorted(a.SerializeToString() for a in node.attribute)))
                if key in first:
                    rename[node.output[0]] = first[key]
                    continue
                first[key] = node.output[0]
            keep.append(node)
        if not rename:
            return model, False
        set_nodes(graph, keep)
        remove_dead_nodes(model)
        return model, False
