"""Reject any layer that is not a FlexLLM layer, naming it: nothing may reach hls4ml's generic paths."""

from hls4ml.model.optimizer import OptimizerPass

from ..layers import INPUT_CLASSES, LAYER_CLASSES

ALLOWED = set(LAYER_CLASSES) | set(INPUT_CLASSES) | {"Constant"}


class UnsupportedLayerError(ValueError):
    pass


class ValidateFlexllmGraph(OptimizerPass):
    name = "validate_flexllm_graph"

    def match(self, node):
        return node.class_name not in ALLOWED

    def transform(self, model, node):
        raise UnsupportedLayerError(
            f"layer '{node.name}' (class {node.class_name}) is not a FlexLLM layer: convert a graph fused by "
            "flexllm_plugin.frontend.fuse_llama (every node a flexllm op) with backend='FlexLLM'")
