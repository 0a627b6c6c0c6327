"""Place every parameter tensor in the external-memory images and record the offsets on the layers."""

from hls4ml.model.optimizer import ModelOptimizerPass

from ..memory import plan_model_memory


class PlanMemory(ModelOptimizerPass):
    name = "plan_memory"

    def __init__(self):
        pass

    def transform(self, model):
        plan_model_memory(model)
        return True
