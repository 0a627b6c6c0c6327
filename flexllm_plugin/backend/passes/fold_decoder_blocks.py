"""Temporal reuse: fold the N decoder blocks of a stage graph into ONE block the kernel runs in a
loop over layers, with the per-layer parameters carried as data (placed per layer in external
memory by ``plan_memory``).

Sources of the per-layer parameters, in order of precedence:
* ``FlexLLM.LayerParams`` in the configuration: a list of golden ``LayerParams`` for the whole model
  (the project builder converts ONE block and supplies all N layers); layer 0 must equal the converted
  block bit for bit, and every layer must fit the block's structure (shapes, bit widths) -- proved here;
* otherwise the graph's own blocks (a graph exported with several layers): all must have the same
  structure as block 0.

Attention layer ``l`` uses KV-cache slot ``l``; the graph's K/V input/output names of every layer are
kept on the attention layer (``kv_names``) so ``predict`` maps them to cache slots.
"""

from hls4ml.model.optimizer import ModelOptimizerPass

from ..block import (BlockStructureError, block_params, check_params_fit, check_same_structure,
                     golden_block_params, params_equal, split_blocks)


class FoldDecoderBlocks(ModelOptimizerPass):
    name = "fold_decoder_blocks"

    def __init__(self):
        pass

    def transform(self, model):
        cfg = model.config.config.setdefault("FlexLLM", {})
        _, blocks, epilogue = split_blocks(model.get_layers())
        block = blocks[0]
        for b, other in enumerate(blocks[1:], 1):
            check_same_structure(block, other, f"decoder block {b}")
        per_layer = [block_params(blk) for blk in blocks]
        attn_of = [next(layer for layer in blk if layer.class_name == "FlexAttention") for blk in blocks]
        kv_names = [{"inputs": list(a.inputs[3:5]), "outputs": list(a.outputs[1:3])} for a in attn_of]

        golden_layers = cfg.get("LayerParams")
        if golden_layers is not None:
            external = [golden_block_params(block, g) for g in golden_layers]
            for l, params in enumerate(external):
                check_params_fit(block, params, f"layer {l}")
            for b in range(len(blocks)):
                if not params_equal(per_layer[b], external[b]):
                    raise BlockStructureError(f"converted decoder block {b} differs from layer {b} of the supplied "
                                              "per-layer parameters (not the same model?)")
            per_layer = external

        # drop blocks 1..N-1 from the graph; the epilogue reads block 0's output
        last_out = blocks[-1][-1].outputs[0]
        for blk in blocks[1:]:
            for layer in blk:
                del model.graph[layer.name]
                for out in layer.outputs:
                    model.output_vars.pop(out, None)
        for layer in epilogue:
            layer.inputs = [block[-1].outputs[0] if i == last_out else i for i in layer.inputs]

        for pos, layer in enumerate(block):
            layer.set_attr("in_block", True)
            if any(per_layer[0][pos]):
                layer.set_attr("per_layer", [p[pos] for p in per_layer])
        attn_of[0].set_attr("kv_names", kv_names)
        attn_of[0].set_attr("cache_index", 0)
        cfg["NumLayers"] = len(per_layer)
        cfg["BlockInput"] = block[0].inputs[0]
        cfg["BlockOutput"] = block[-1].outputs[0]
        return True
