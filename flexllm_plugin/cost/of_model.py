"""The cost model of a converted FlexLLM stage (an hls4ml ModelGraph of the FlexLLM backend)."""

from __future__ import annotations

from .board import BOARDS
from .stage import StageModel, stage_model


def stage_description(hm) -> dict:
    """What the cost model needs of a converted stage, as plain data (kept in flexllm_build.json)."""
    from ..backend.passes.templates import stage_lanes

    cfg = hm.config.config["FlexLLM"]
    sched = {k: v for k, v in cfg["Schedule"].items()}
    keep = ("unit", "d_in", "d_out", "kind", "clip", "layer")     # kind / clip: per call (per-call engines)
    sched["block"] = [{k: c[k] for k in keep} for c in sched["block"]]
    sched["tail"] = [{k: c[k] for k in keep} for c in sched["tail"]]
    return {"name": hm.config.get_project_name(), "schedule": sched, "n_layers": int(cfg.get("NumLayers") or 1),
            "lanes": stage_lanes(hm), "clock_mhz": round(1e3 / float(hm.config.get_config_value("ClockPeriod")), 3)}


def model_of_description(desc: dict, board: str = "u280") -> StageModel:
    return stage_model(desc["name"], desc["schedule"], desc["n_layers"], desc["lanes"], BOARDS[board],
                       desc["clock_mhz"])


def model_of_stage(hm, board: str = "u280") -> StageModel:
    return model_of_description(stage_description(hm), board)
