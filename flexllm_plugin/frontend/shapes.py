"""Shape inference that also works for models above protobuf's 2 GiB limit."""

from __future__ import annotations

import numpy as np
from onnx import helper
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.transformation.infer_shapes import InferShapes

INLINE_LIMIT = 1 << 16   # initialisers above this many bytes are replaced by typed graph inputs


def _nbytes(t) -> int:
    return int(np.prod(t.dims, dtype=np.int64)) * np.dtype(helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize


def infer_shapes(model: ModelWrapper) -> ModelWrapper:
    """qonnx ``InferShapes`` run on a light copy of ``model`` whose large initialisers are typed graph
    inputs instead (ONNX shape inference serialises the model, which fails above 2 GiB, and needs no
    weight values); the inferred ``value_info`` (and the shape functions / opset imports qonnx's
    ``InferShapes`` adds for the CustomOps) are copied back. Modifies and returns ``model``."""
    graph = model.graph
    big = [t for t in graph.initializer if _nbytes(t) > INLINE_LIMIT]
    big_names = {t.name for t in big}
    light_graph = helper.make_graph(
        list(graph.node), graph.name,
        list(graph.input) + [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in big
                             if t.name not in {i.name for i in graph.input}],
        list(graph.output),
        initializer=[t for t in graph.initializer if t.name not in big_names],
        value_info=[v for v in graph.value_info if v.name not in big_names])
    light = helper.make_model(light_graph, opset_imports=list(model.model.opset_import),
                              ir_version=model.model.ir_version)
    light.functions.extend(model.model.functions)
    light = ModelWrapper(light, fix_missing_initializer_valueinfo=False)
    light = light.transform(InferShapes(), make_deepcopy=False, cleanup=False)
    kept = [v for v in graph.value_info if v.name in big_names]   # e.g. added by ModelWrapper for initialisers
    del graph.value_info[:]
    graph.value_info.extend(kept + [v for v in light.graph.value_info if v.name not in big_names])
    known = {(f.domain, f.name) for f in model.model.functions}
    model.model.functions.extend(f for f in light.model.functions if (f.domain, f.name) not in known)
    have = {o.domain for o in model.model.opset_import}
    model.model.opset_import.extend(o for o in light.model.opset_import if o.domain not in have)
    return model
