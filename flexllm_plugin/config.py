"""The flexllm YAML configuration (hls4ml's top-level keys plus Model/Quantization/Prefill/Decode/HMT).

Every key is declared here with its type and default; an unknown key or a bad value raises
:class:`ConfigError` naming the key path (e.g. ``Decode.BP``) and the file.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

import yaml


class ConfigError(ValueError):
    pass


def _int(lo=1, hi=None):
    def check(v):
        if not isinstance(v, int) or isinstance(v, bool) or v < lo or (hi is not None and v > hi):
            rng = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
            return f"must be an integer {rng}"
    return check


def _float_pos(v):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
        return "must be a positive number"


def _str(v):
    if not isinstance(v, str) or not v:
        return "must be a non-empty string"


def _bool(v):
    if not isinstance(v, bool):
        return "must be true or false"


def _choice(*options):
    def check(v):
        if v not in options:
            return f"must be one of {list(options)}"
    return check


def _opt(check):
    def wrapped(v):
        return None if v is None else check(v)
    return wrapped


def _mapping(v):
    if not isinstance(v, dict):
        return "must be a mapping"


# key -> (default, validator). A nested dict of this form declares a section.
SCHEMA: Dict[str, Any] = {
    "Backend": ("FlexLLM", _choice("FlexLLM")),
    "Part": ("xcu280-fsvh2892-2L-e", _str),
    "Board": ("u280", _choice("u280")),
    "ClockPeriod": (3.33, _float_pos),
    "OutputDir": ("flexllm_prj", _str),
    "ProjectName": ("flexllm", _str),
    "Model": {
        "Source": (None, _opt(_str)),
        "Architecture": (None, _opt(_mapping)),
    },
    "Quantization": {
        "Preset": ("flexllm-w4a4", _choice("float", "w8a8", "w4a8", "flexllm-w4a4")),
        "Rotation": (None, _opt(_choice("none", "hadamard"))),
        "InputQuant": (None, _opt(_choice("uint4_asym", "int8"))),
        "GPTQ": (None, _opt(_bool)),
        "CalibrationTokens": (None, _opt(_int(1))),
        "CalibrationContext": (None, _opt(_int(1))),
    },
    "Prefill": {
        "MaxSeqLen": (1024, _int(1)),
        "ChunkTokens": (32, _int(1)),
        "TP": (8, _int(1)),
        "WP": (24, _int(1)),
        "FFNPorts": (3, _int(1, 32)),
    },
    "Decode": {
        "MaxContext": (2048, _int(1)),
        "MaxNewTokens": (1024, _int(1)),
        "BP": (16, _int(1, 32)),
        "WP": (64, _int(1)),
        "HP": (8, _int(1)),
        "KVParallel": (32, _int(1)),
        "Sampling": ("greedy", _choice("greedy", "top-k")),
        "TopK": (1, _int(1)),
        "Temperature": (1.0, _float_pos),
    },
    "HMT": {
        "Enabled": (False, _bool),
        "SegmentLength": (990, _int(2)),
        "SensoryTokens": (32, _int(0)),
        "MemorySlots": (64, _int(1)),
    },
}


def _validate(data: Any, schema: Dict[str, Any], path: str, source: str) -> Dict[str, Any]:
    where = f" in {source}" if source else ""
    if not isinstance(data, dict):
        raise ConfigError(f"{path or 'config'}{where} must be a mapping, got {type(data).__name__}")
    unknown = sorted(set(data) - set(schema))
    if unknown:
        key = f"{path}.{unknown[0]}" if path else unknown[0]
        raise ConfigError(f"unknown key {key!r}{where}; allowed at this level: {sorted(schema)}")
    out: Dict[str, Any] = {}
    for key, spec in schema.items():
        full = f"{path}.{key}" if path else key
        if isinstance(spec, dict):
            out[key] = _validate(data.get(key) or {}, spec, full, source)
            continue
        default, check = spec
        value = data.get(key, copy.deepcopy(default))
        problem = check(value)
        if problem:
            raise ConfigError(f"{full}{where} {problem}, got {value!r}")
        out[key] = value
    return out


@dataclass
class FlexLLMConfig:
    data: Dict[str, Any]
    path: Optional[Path] = None

    def __getitem__(self, key):
        return self.data[key]

    @property
    def output_dir(self) -> Path:
        """As in hls4ml, a relative OutputDir is relative to the working directory."""
        return Path(self.data["OutputDir"])

    def quant_spec(self, preset: Optional[str] = None, rotation: Optional[str] = None):
        from brevitas_models.quant_presets import quant_preset
        q = self.data["Quantization"]
        overrides = {}
        mapping = {"Rotation": "rotation", "InputQuant": "input_quant", "GPTQ": "gptq",
                   "CalibrationTokens": "calibration_tokens",
                   "CalibrationContext": "calibration_ctx"}
        for key, name in mapping.items():
            if q[key] is not None:
                overrides[name] = q[key]
        if rotation is not None:
            overrides["rotation"] = rotation
        try:
            return quant_preset(preset or q["Preset"], **overrides)
        except ValueError as e:
            raise ConfigError(f"Quantization: {e}") from None

    def load_weights(self):
        from brevitas_models.sources import load_source
        m = self.data["Model"]
        if m["Source"] is None and not m["Architecture"]:
            raise ConfigError(f"Model{self._where()} needs Source or Architecture")
        try:
            return load_source(m["Source"], m["Architecture"])
        except (ValueError, FileNotFoundError) as e:
            raise ConfigError(f"Model{self._where()}: {e}") from e

    def _where(self):
        return f" in {self.path}" if self.path else ""


def parse_config(data: Dict[str, Any], source: str = "") -> FlexLLMConfig:
    validated = _validate(data, SCHEMA, "", source)
    m = validated["Model"]
    if m["Source"] is not None:
        from brevitas_models.sources import parse_source
        try:
            parse_source(m["Source"])
        except ValueError as e:
            raise ConfigError(f"{e}{' in ' + source if source else ''}") from None
    if m["Architecture"] is not None:
        from brevitas_models.arch import LlamaArch
        if m["Source"] is None:
            try:
                LlamaArch.from_dict(m["Architecture"])
            except (TypeError, ValueError) as e:
                raise ConfigError(f"{e}{' in ' + source if source else ''}") from None
    return FlexLLMConfig(validated, Path(source) if source else None)


def load_config(path) -> FlexLLMConfig:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{p} is not valid YAML: {e}") from None
    if data is None:
        raise ConfigError(f"config file is empty: {p}")
    return parse_config(data, str(p))
