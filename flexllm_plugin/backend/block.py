"""The decoder block of a stage graph, and its per-layer parameters (temporal reuse).

A stage kernel runs ONE decoder block in a loop over the model's layers (``for l in 0..N-1``); every
parameter of a block layer exists once per decoder layer in external memory. This module finds the
block in a converted graph (``prologue | block x N | epilogue``, blocks delimited by every second
residual add), checks that the blocks are structurally identical, and provides the per-layer
parameter sets, either from the graph's own blocks or from a golden model of the full network
(``brevitas_models.golden.GoldenModel``) when only one block was converted.
"""

from __future__ import annotations

from typing import Dict, List, Sequence

import numpy as np

from .layers import INPUT_CLASSES

# parameters that differ per decoder layer, by layer class
LAYER_PARAMS = {
    "FlexRMSNorm": ("weight",),
    "FlexQuantLinear": ("w_int", "w_scale"),
    "FlexAttention": ("s_q", "s_k", "s_v", "s_p"),
}
# attributes that define the block's structure (must be equal in every layer)
STRUCTURE = {
    "FlexRMSNorm": ("n_in", "eps"),
    "FlexTokenQuant": ("n_in", "kind", "clip"),
    "FlexQuantLinear": ("n_in", "n_out", "weight_bits", "input_kind"),
    "FlexAttention": ("heads", "kv_heads", "head_dim", "softmax_scale"),
    "FlexSwiGLU": ("n_in",), "FlexHadamard": ("n_in", "m"), "FlexResidualAdd": ("n_in",),
    "FlexSplitHeads": ("heads", "head_dim"),
}


class BlockStructureError(ValueError):
    pass


def split_blocks(layers: Sequence) -> tuple:
    """``(prologue, [block_0, .., block_{N-1}], epilogue)`` of a layer sequence (graph order)."""
    layers = [layer for layer in layers if layer.class_name not in INPUT_CLASSES]
    adds = [i for i, layer in enumerate(layers) if layer.class_name == "FlexResidualAdd"]
    if len(adds) % 2 or not adds:
        raise BlockStructureError(f"expected two residual adds per decoder layer, found {len(adds)}")
    start = next(i for i, layer in enumerate(layers) if layer.class_name == "FlexEmbedding") + 1
    blocks, begin = [], start
    for k in range(1, len(adds), 2):
        blocks.append(layers[begin:adds[k] + 1])
        begin = adds[k] + 1
    return layers[:start], blocks, layers[begin:]


def signature(layer) -> tuple:
    return (layer.class_name,) + tuple(_plain(layer.get_attr(a)) for a in STRUCTURE.get(layer.class_name, ()))


def _plain(v):
    return float(v) if isinstance(v, (float, np.floating)) else v


def check_same_structure(reference: Sequence, other: Sequence, what: str) -> None:
    if len(reference) != len(other):
        raise BlockStructureError(f"{what}: {len(other)} layers, the converted block has {len(reference)}")
    for a, b in zip(reference, other):
        if signature(a) != signature(b):
            raise BlockStructureError(f"{what}: layer '{b.name}' {signature(b)} differs from the block's "
                                      f"'{a.name}' {signature(a)}")


def block_params(block: Sequence) -> List[Dict[str, np.ndarray]]:
    """Per block position, the per-layer parameter arrays of that layer (empty dict if none)."""
    return [{k: np.asarray(layer.get_attr(k)) for k in LAYER_PARAMS.get(layer.class_name, ())} for layer in block]


def golden_block_params(block: Sequence, golden_layer) -> List[Dict[str, np.ndarray]]:
    """The same list for decoder layer ``golden_layer`` (a golden ``LayerParams``), matched by role:
    the block's norms are (input, post-attention), its linears (q, k, v, o, gate, up, down)."""
    norms = [golden_layer.input_norm, golden_layer.post_norm]
    linears = [lp for _, lp in golden_layer.linears()]
    out = []
    for layer in block:
        cls = layer.class_name
        if cls == "FlexRMSNorm":
            out.append({"weight": np.asarray(norms.pop(0), dtype=np.float32)})
        elif cls == "FlexQuantLinear":
            lp = linears.pop(0)
            out.append({"w_int": lp.w_int, "w_scale": lp.w_scale})
        elif cls == "FlexAttention":
            out.append({"s_q": golden_layer.s_q, "s_k": golden_layer.s_k, "s_v": golden_layer.s_v,
                        "s_p": golden_layer.s_p})
        else:
            out.append({})
    if norms or linears:
        raise BlockStructureError(f"the golden layer has {len(norms)} norms / {len(linears)} linears more than "
                                  "the converted block")
    return out


def check_params_fit(block: Sequence, params: List[Dict[str, np.ndarray]], what: str) -> None:
    for layer, p in zip(block, params):
        for key in LAYER_PARAMS.get(layer.class_name, ()):
            mine = np.asarray(layer.get_attr(key))
            if p[key].shape != mine.shape:
                raise BlockStructureError(f"{what}: '{layer.name}'.{key} has shape {p[key].shape}, the block "
                                          f"has {mine.shape}")
        if layer.class_name == "FlexQuantLinear":
            bits = layer.get_attr("weight_bits")
            lim = 2 ** (bits - 1)
            if p["w_int"].min() < -lim or p["w_int"].max() > lim - 1:
                raise BlockStructureError(f"{what}: '{layer.name}' weights exceed int{bits}")


def params_equal(a: List[Dict[str, np.ndarray]], b: List[Dict[str, np.ndarray]]) -> bool:
    return all(set(x) == set(y) and all(np.array_equal(x[k], y[k]) for k in x) for x, y in zip(a, b))
