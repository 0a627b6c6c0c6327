"""One call from an exported stage graph to an hls4ml model on the FlexLLM backend.

Equivalent to what a user writes with hls4ml's own API::

    from flexllm_plugin.frontend import fuse_llama
    fused = fuse_llama("prefill/model.onnx")                 # QONNX -> flexllm ops (or a clear error)
    hm = hls4ml.converters.convert_from_onnx_model(fused.model, backend="FlexLLM", output_dir=...,
                                                   part="xcu280-fsvh2892-2L-e")
    hm.compile(); hm.predict(...)
"""

from __future__ import annotations

from typing import Optional

from .backend.flexllm_backend import DEFAULT_CLOCK_NS, U280_PART

LANE_KEYS = ("TokenLanes", "PrefillOutLanes", "PrefillInLanes", "OutLanes", "InLanes", "HeadLanes", "KeyLanes",
             "ElementLanes", "QuantLanes", "HadamardLanes", "MacImpl", "DSPLanes")


def convert_stage(model, output_dir: str, project_name: str = "myproject", part: str = U280_PART,
                  clock_period: float = DEFAULT_CLOCK_NS, max_context: Optional[int] = None, **lanes):
    """Fuse ``model`` (path, ModelProto or ModelWrapper of an exported stage) and convert it.

    ``lanes``: engine parallelism, keys of :data:`LANE_KEYS` (prefill: TokenLanes x PrefillOutLanes x
    PrefillInLanes MACs per cycle; decode: OutLanes x InLanes; attention: HeadLanes, KeyLanes).
    """
    import hls4ml

    from .backend.registration import ensure_registered
    from .frontend import fuse_llama

    unknown = sorted(set(lanes) - set(LANE_KEYS))
    if unknown:
        raise ValueError(f"convert_stage: unknown lane keys {unknown}; expected some of {list(LANE_KEYS)}")
    ensure_registered()
    fused = fuse_llama(model)
    hm = hls4ml.converters.convert_from_onnx_model(
        fused.model, output_dir=str(output_dir), project_name=project_name, backend="FlexLLM", part=part,
        clock_period=clock_period, max_context=max_context, lanes=lanes)
    return hm
