"""Drop hls4ml ``Constant`` layers: the FlexLLM handlers already copied every initialiser they use."""

from hls4ml.model.optimizer import OptimizerPass

from ..graph import consumers


class RemoveConstantLayers(OptimizerPass):
    name = "remove_constant_layers"

    def match(self, node):
        return node.class_name == "Constant"

    def transform(self, model, node):
        users = [layer.name for layer in consumers(model, node.outputs[0])]
        if users:
            raise ValueError(f"constant '{node.name}' is used as a dynamic input by {users}")
        del model.graph[node.name]
        model.output_vars.pop(node.outputs[0], None)
        return True
