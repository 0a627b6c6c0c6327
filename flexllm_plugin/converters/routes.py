"""hls4ml's two ONNX entry points, as the README documents them, for ``Backend: FlexLLM``.

Both ``convert_from_config`` (the YAML route) and ``convert_from_onnx_model`` end in hls4ml's
``onnx_to_hls(config)``. :func:`install` wraps that function once; for any other backend the wrapper
calls hls4ml unchanged. For FlexLLM it

* fills what the YAML route leaves out (``HLSConfig`` with the model precision hls4ml's Python route
  sets, ``Part``, ``ClockPeriod``, ``IOType``, ``OutputDir``, ``ProjectName``, the ``FlexLLM`` section)
  from the backend's ``create_initial_config``, so ``OnnxModel`` and ``Backend: FlexLLM`` alone suffice;
* fuses a graph that is not fused yet (a raw exported QONNX stage) with
  :func:`flexllm_plugin.frontend.fuse_llama`, whose error names every node it cannot fuse, instead of
  letting hls4ml fail deep inside with "Unsupported operation type: Gather".
"""

from __future__ import annotations

import copy
from typing import Any, Dict

DEFAULT_OUTPUT_DIR = "hls4mlprj_flexllm"
DEFAULT_PROJECT = "flexllm_stage"
MODEL_DEFAULTS = {"Precision": "fixed<16,6>", "ReuseFactor": 1}    # as hls4ml's _check_model_config


def is_flexllm(config: Dict[str, Any]) -> bool:
    return str(config.get("Backend", "")).lower() == "flexllm"


def with_defaults(config: Dict[str, Any]) -> Dict[str, Any]:
    from hls4ml.backends import get_backend

    cfg = dict(config)
    initial = get_backend("FlexLLM").create_initial_config(
        part=cfg.get("Part"), clock_period=cfg.get("ClockPeriod"), io_type=cfg.get("IOType", "io_parallel"))
    for key, value in initial.items():
        if key == "FlexLLM":
            cfg[key] = {**value, **dict(cfg.get(key) or {})}
        elif cfg.get(key) is None:
            cfg[key] = copy.deepcopy(value)
    hls = dict(cfg.get("HLSConfig") or {})
    hls["Model"] = {**MODEL_DEFAULTS, **dict(hls.get("Model") or {})}
    cfg["HLSConfig"] = hls
    cfg.setdefault("OutputDir", DEFAULT_OUTPUT_DIR)
    cfg.setdefault("ProjectName", DEFAULT_PROJECT)
    return cfg


def _op_types(model):
    import onnx

    proto = onnx.load(str(model)) if isinstance(model, (str, bytes)) or hasattr(model, "__fspath__") else model
    proto = getattr(proto, "model", proto)          # qonnx ModelWrapper
    return {n.op_type for n in proto.graph.node}, proto


def fused_model(model):
    """A raw exported graph (no fused flexllm op at all) -> ``fuse_llama(model).model``; a fused graph is
    returned as is (a stray node in it is the backend's to reject, naming the layer)."""
    from .onnx_handlers import ONNX_HANDLERS

    ops, proto = _op_types(model)
    if ops & set(ONNX_HANDLERS):
        return proto
    from ..frontend import fuse_llama
    return fuse_llama(proto).model


def install() -> None:
    """Wrap hls4ml's ``onnx_to_hls`` function (idempotent). Called from the post-import hook of the module
    ``hls4ml.converters.onnx_to_hls``, before the package re-exports the function (so the package picks up
    the wrapper), or later, when the package is loaded (then its attribute is replaced too)."""
    import sys

    mod = sys.modules["hls4ml.converters.onnx_to_hls"]
    original = mod.onnx_to_hls
    if getattr(original, "_flexllm_wrapped", False):
        wrapper = original
    else:
        def wrapper(config):
            if is_flexllm(config):
                config = with_defaults(config)
                config["OnnxModel"] = fused_model(config["OnnxModel"])
            return original(config)

        wrapper._flexllm_wrapped = True
        wrapper.__wrapped__ = original
        wrapper.__doc__ = original.__doc__
        mod.onnx_to_hls = wrapper
    pkg = sys.modules.get("hls4ml.converters")
    current = getattr(pkg, "onnx_to_hls", None)
    if callable(current) and not isinstance(current, type(sys)) and current is not wrapper:
        pkg.onnx_to_hls = wrapper
