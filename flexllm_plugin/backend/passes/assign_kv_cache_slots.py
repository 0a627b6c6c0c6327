"""Give every attention layer its KV-cache slot (its decoder-layer index, in graph order)."""

from hls4ml.model.optimizer import OptimizerPass


class AssignKvCacheSlots(OptimizerPass):
    name = "assign_kv_cache_slots"

    def match(self, node):
        return node.class_name == "FlexAttention" and node.get_attr("cache_index") < 0

    def transform(self, model, node):
        attn = [layer for layer in model.get_layers() if layer.class_name == "FlexAttention"]
        node.set_attr("cache_index", attn.index(node))
        return False
