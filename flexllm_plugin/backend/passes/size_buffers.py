"""Give every activation tensor its on-chip buffer geometry and every layer its run-time row count.

``buf_width``: columns of the layer's output buffer. It is the tensor's own width, except that Q, K, V
and the attention output share one row length (``heads * head_dim``, the attention unit's ``ROW``).
``max_rows``: rows of the buffer (the graph's token count; 1 after ``LastToken``).
``rows``: the C++ expression of the run-time row count (``n_tokens``, or ``1`` after ``LastToken``).
"""

from hls4ml.model.optimizer import ModelOptimizerPass

from ..layers import INPUT_CLASSES

NATURAL_WIDTH = {"FlexEmbedding": "n_out", "FlexQuantLinear": "n_out"}


def natural_width(layer):
    if layer.class_name == "FlexAttention":
        return layer.get_attr("heads") * layer.get_attr("head_dim")
    return int(layer.get_attr(NATURAL_WIDTH.get(layer.class_name, "n_in")))


class SizeBuffers(ModelOptimizerPass):
    name = "size_buffers"

    def __init__(self):
        pass

    def transform(self, model):
        by_output = {out: layer for layer in model.get_layers() for out in layer.outputs}
        for layer in model.get_layers():
            if layer.class_name in INPUT_CLASSES:
                continue
            layer.set_attr("buf_width", natural_width(layer))
            src = by_output.get(layer.inputs[0]) if layer.inputs else None
            if layer.class_name == "FlexLastToken" or (src is not None and src.get_attr("rows") == "1"):
                layer.set_attr("rows", "1")
                layer.set_attr("max_rows", 1)
            else:
                layer.set_attr("rows", "n_tokens")
                layer.set_attr("max_rows", int(layer.get_attr("n_tokens")))
        for attn in [layer for layer in model.get_layers() if layer.class_name == "FlexAttention"]:
            row = natural_width(attn)
            for name in attn.inputs[:3]:
                producer = by_output.get(name)
                if producer is None or producer.class_name != "FlexQuantLinear":
                    raise ValueError(f"attention '{attn.name}': input '{name}' must come straight from a "
                                     "projection (QuantLinear)")
                if producer.get_attr("n_out") > row:
                    raise ValueError(f"attention '{attn.name}': projection '{producer.name}' is wider than "
                                     f"heads * head_dim = {row}")
                producer.set_attr("buf_width", row)
        return True
