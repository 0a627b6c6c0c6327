"""Drop hls4ml ``Constant`` layers: the FlexLLM handlers already copied every initialiser they use."""

from hls4ml.model.optimizer import OptimizerPass


class RemoveConstantLayers(OptimizerPass):
    name = "remove_constant_layers"

    def match(self, node):
        return node.class_name == "Constant"

    def transform(self, model, node):
        users = [layer.name for layer in model.get_layers() if node.outputs[0] in layer.inputs]
        if users:
            raise ValueError(f"constant '{node.name}' is used as a dynamic input by {users}")
        del model.graph[node.name]
        model.output_vars.pop(node.outputs[0], None)
        return True
