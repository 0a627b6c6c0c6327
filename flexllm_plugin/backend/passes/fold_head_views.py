"""Fold the per-head views (``SplitHeads``) and RoPE into the attention layer that consumes them.

The kernel keeps projections in row-major ``[tokens][heads*head_dim]`` buffers, which is exactly the
layout the attention unit reads (``layers/flexllm_attention.h``), and the attention unit applies RoPE
to Q and K itself while quantizing them (the tables come from external memory and are indexed by the
absolute position, a kernel argument). So ``QuantLinear -> SplitHeads -> [RoPE ->] QuantAttention``
becomes ``QuantLinear -> QuantAttention`` with the RoPE tables recorded on the attention layer.
"""

import numpy as np
from hls4ml.model.optimizer import OptimizerPass

from ..graph import consumers


def _bypass(model, node):
    """Remove a single-input layer, pointing its consumers at its input."""
    src = node.inputs[0]
    for user in consumers(model, node.outputs[0]):
        user.inputs = [src if i == node.outputs[0] else i for i in user.inputs]
    del model.graph[node.name]
    model.output_vars.pop(node.outputs[0], None)


class FoldHeadViews(OptimizerPass):
    name = "fold_head_views"

    def match(self, node):
        return node.class_name in ("FlexSplitHeads", "FlexRoPE")

    def transform(self, model, node):
        users = consumers(model, node.outputs[0])
        if node.class_name == "FlexRoPE":
            bad = [u.name for u in users if u.class_name != "FlexAttention"]
            if bad or not users:
                raise ValueError(f"RoPE layer '{node.name}' must feed attention (the attention unit applies "
                                 f"RoPE); it feeds {bad or 'nothing'}")
            for attn in users:
                slot = attn.inputs.index(node.outputs[0])
                if slot not in (0, 1):
                    raise ValueError(f"RoPE layer '{node.name}' feeds input {slot} of '{attn.name}' (only Q and K)")
                prev = attn.get_attr("rope_cos")
                if prev is not None and not (np.array_equal(prev, node.get_attr("cos"))
                                             and np.array_equal(attn.get_attr("rope_sin"), node.get_attr("sin"))):
                    raise ValueError(f"attention '{attn.name}': Q and K use different RoPE tables")
                attn.set_attr("rope_cos", node.get_attr("cos"))
                attn.set_attr("rope_sin", node.get_attr("sin"))
                attn.set_attr("rope_inputs", sorted(set(attn.get_attr("rope_inputs", ())) | {slot}))
        else:
            bad = [u.name for u in users if u.class_name not in ("FlexRoPE", "FlexAttention")]
            if bad:
                raise ValueError(f"head view '{node.name}' feeds {bad}: only RoPE / attention read per-head views")
        _bypass(model, node)
        return True
