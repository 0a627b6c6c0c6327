"""Temporal reuse: fold the N decoder blocks of a stage graph into ONE block the kernel runs in a
loop over layers, with the per-layer parameters carried as data (placed per layer in external
memory by ``plan_memory``).

Sources of the per-layer parameters, in order of precedence:
* ``FlexLLM.LayerParams`` in the configuration: a list of golden ``LayerParams`` for the whole model
  (the project builder converts ONE block and supplies all N layers); layer 0 must equal the converted
  block bit for bit, and every layer must fit the block's structure (shapes, bit widths) -- proved here;
* otherwise the graph's own blocks (a graph exported with several layers): all must have the same
  structure as block 0.

``FlexLLM.VocabParams`` (``embed`` [V, D] fp32, ``lm_head_w_int`` [V, D], ``lm_head_w_scale`` [V]) likewise
supplies the vocabulary-sized tensors when the graph was exported with a reduced vocabulary (only the
structure of the embedding and the LM head is converted; shapes and bit widths are checked).

Attention layer ``l`` uses KV-cache slot ``l``; the graph's K/V input/output names of every layer are
kept on the attention layer (``kv_names``) so ``predict`` maps them to cache slots.
"""

import numpy as np
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

        vocab = cfg.get("VocabParams")
        if vocab is not None:
            apply_vocab_params(model, vocab)

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


def apply_vocab_params(model, vocab) -> None:
    layers = model.get_layers()
    emb = next(layer for layer in layers if layer.class_name == "FlexEmbedding")
    head = [layer for layer in layers if layer.class_name == "FlexQuantLinear"][-1]
    table = np.ascontiguousarray(vocab["embed"], dtype=np.float32)
    w_int = np.ascontiguousarray(vocab["lm_head_w_int"], dtype=np.int8)
    w_scale = np.ascontiguousarray(vocab["lm_head_w_scale"], dtype=np.float32).reshape(-1)
    if table.ndim != 2 or table.shape[1] != emb.get_attr("n_out"):
        raise BlockStructureError(f"embedding table {table.shape} does not fit '{emb.name}' (hidden {emb.get_attr('n_out')})")
    if w_int.shape != (table.shape[0], head.get_attr("n_in")) or w_scale.shape != (table.shape[0],):
        raise BlockStructureError(f"LM head {w_int.shape} / {w_scale.shape} does not fit '{head.name}' "
                                  f"(in {head.get_attr('n_in')}, vocab {table.shape[0]})")
    lim = 2 ** (head.get_attr("weight_bits") - 1)
    if w_int.min() < -lim or w_int.max() > lim - 1:
        raise BlockStructureError(f"LM head weights exceed int{head.get_attr('weight_bits')}")
    emb.set_attr("table", table)
    emb.set_attr("vocab_size", int(table.shape[0]))
    head.set_attr("w_int", w_int)
    head.set_attr("w_scale", w_scale)
    head.set_attr("n_out", int(table.shape[0]))
