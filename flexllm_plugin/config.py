"""The flexllm YAML configuration (hls4ml's top-level keys plus Model/Quantization/Prefill/Decode/HMT).

Every key is declared here with its type and default; an unknown key or a bad value raises
:class:`ConfigError` naming the key path (e.g. ``Decode.BP``) and the file.
"""

from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional

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
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        return "must be a positive finite number"


C_KEYWORDS = frozenset("""alignas alignof and and_eq asm auto bitand bitor bool break case catch char char16_t
char32_t char8_t class compl concept const consteval constexpr constinit const_cast continue co_await co_return
co_yield decltype default delete do double dynamic_cast else enum explicit export extern false float for friend
goto if inline int long mutable namespace new noexcept not not_eq nullptr operator or or_eq private protected
public register reinterpret_cast requires return short signed sizeof static static_assert static_cast struct
switch template this thread_local throw true try typedef typeid typename union unsigned using virtual void
volatile wchar_t while xor xor_eq main""".split())


def _c_identifier(v):
    if not isinstance(v, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,63}", v):
        return ("must be a C identifier (letters, digits, underscores, not starting with a digit, at most 64 "
                "characters): it names the kernels and their source files")
    if v in C_KEYWORDS or v.startswith("__"):
        return "must not be a C/C++ keyword or a reserved name"


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


def _board_name(v):
    from .cost.board import BOARDS
    if not isinstance(v, str) or v not in BOARDS:
        return f"must be one of {sorted(BOARDS)} (flexllm_plugin/boards/*.yaml)"


def _mapping(v):
    if not isinstance(v, dict):
        return "must be a mapping"


# key -> (default, validator). A nested dict of this form declares a section.
SCHEMA: Dict[str, Any] = {
    "Backend": ("FlexLLM", _choice("FlexLLM")),
    "Part": ("xcu280-fsvh2892-2L-e", _str),        # checked against Board in cross-field checks
    "Board": ("u280", _board_name),             # a board file's name or alias (u280 / alveo-u280, v80 / alveo-v80)
    "ClockPeriod": (3.33, _float_pos),
    "OutputDir": ("flexllm_prj", _str),
    "ProjectName": ("flexllm", _c_identifier),
    "Model": {
        "Source": (None, _opt(_str)),
        "Architecture": (None, _opt(_mapping)),
    },
    "Quantization": {
        "Preset": ("flexllm-w4a4", _choice("float", "w8a8", "w4a8", "flexllm-w4a4")),
        "Rotation": (None, _opt(_choice("none", "hadamard", "learned"))),
        "RotationTraining": (None, _opt(_mapping)),   # Rotation: learned; keys Steps, LearningRate, Tokens
        "InputQuant": (None, _opt(_choice("uint4_asym", "int8"))),
        "InputQuantOverrides": (None, _opt(_mapping)),
        "GPTQ": (None, _opt(_bool)),
        "WeightClipSearch": (None, _opt(_bool)),
        "GPTQTarget": (None, _opt(_choice("quantized", "unquantized", "float"))),
        "InputClipRatios": (None, _opt(_mapping)),
        "SeamSmoothing": (None, _opt(_mapping)),
        "CalibrationTokens": (None, _opt(_int(1))),
        "CalibrationContext": (None, _opt(_int(1))),
    },
    "Prefill": {
        "MaxSeqLen": (1024, _int(1)),
        "ChunkTokens": (32, _int(1)),
        "TP": (8, _int(1)),
        "WP": (24, _int(1)),
        "QuantLanes": (32, _int(1, 128)),  # per-token quantizer lanes (a power of two)
        "DSPLanes": (0, _int(0)),           # output lanes of the prefill engine on DSPs (two per DSP48E2; even)
    },
    "Decode": {
        "MaxContext": (2048, _int(1)),
        "MaxNewTokens": (1024, _int(1)),
        "BP": (16, _int(1, 32)),       # HBM budget (weight ports + 2 parameter channels <= 32) in cross_checks
        "WP": (64, _int(1)),
        "HP": (8, _int(1)),
        "KVParallel": (8, _int(1, 16)),   # keys per cycle (<= 16: the softmax sums' loop-carried distance)
        "DSPPacking": (False, _bool),
        "QuantLanes": (64, _int(1, 128)),  # per-token quantizer lanes (a power of two)
        "Sampling": ("greedy", _choice("greedy", "top-k")),
        "TopK": (1, _int(1)),
        "Temperature": (1.0, _float_pos),
    },
    "HMT": {
        "Enabled": (False, _bool),
        "SegmentLength": (1024, _int(3)),      # L: main-pass length; segment block = L - 2 - SensoryTokens
        "SummaryTokens": (None, _opt(_int(1))),  # j (default: half the segment block)
        "SensoryTokens": (32, _int(0)),
        "MemorySlots": (64, _int(1)),
        "RecallScale": ("none", _choice("none", "scalar", "diagonal")),   # learned output map of the recall
        "RecallResidual": (False, _bool),      # P_n = P_0 + (scaled) mix
        "Checkpoint": (None, _opt(_str)),      # trained T, P_0, W_q, W_k (default: flexllm hmt-train's cache)
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
                   "InputQuantOverrides": "input_quant_overrides", "WeightClipSearch": "weight_clip_search",
                   "GPTQTarget": "gptq_target",
                   "InputClipRatios": "input_clip_ratios", "SeamSmoothing": "seam_smoothing",
                   "RotationTraining": "rotation_training",
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

    def hmt_spec(self, **switches):
        """The HMT section as an HMTSpec (switches: memory, zero_initial, memory_point)."""
        return hmt_spec_of(self.data["HMT"], str(self.path) if self.path else "", **switches)

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


HBM_PARAM_CHANNELS = 2          # the fp32 parameter image (fmem) and the linear parameter blocks (lmem)


def _non_finite(data: Any, path: str = ""):
    """The key path of the first NaN / Inf number anywhere in the config, else None."""
    if isinstance(data, float) and not math.isfinite(data):
        return path or "config"
    if isinstance(data, dict):
        for k, v in data.items():
            found = _non_finite(v, f"{path}.{k}" if path else str(k))
            if found:
                return found
    if isinstance(data, list):
        for i, v in enumerate(data):
            found = _non_finite(v, f"{path}[{i}]")
            if found:
                return found
    return None


def cross_checks(data: Dict[str, Any], source: str = "") -> None:
    """Limits between fields that need only the config (no model): context and prompt sizes, sampling,
    the HBM channel budget, the part of the board, the HMT sizes."""
    from .cost.board import BOARDS

    where = f" in {source}" if source else ""
    p, d = data["Prefill"], data["Decode"]
    if p["MaxSeqLen"] > d["MaxContext"]:
        raise ConfigError(f"Prefill.MaxSeqLen {p['MaxSeqLen']}{where} exceeds Decode.MaxContext {d['MaxContext']} "
                          "(the prompt must fit the KV cache)")
    if p["ChunkTokens"] > p["MaxSeqLen"]:
        raise ConfigError(f"Prefill.ChunkTokens {p['ChunkTokens']}{where} exceeds Prefill.MaxSeqLen {p['MaxSeqLen']}")
    if d["MaxNewTokens"] >= d["MaxContext"]:
        raise ConfigError(f"Decode.MaxNewTokens {d['MaxNewTokens']}{where} must be below Decode.MaxContext "
                          f"{d['MaxContext']}")
    if d["Sampling"] == "top-k" and d["TopK"] < 2:
        raise ConfigError(f"Decode.TopK {d['TopK']}{where} must be >= 2 with Sampling: top-k (TopK 1 is greedy)")
    if d["Sampling"] == "greedy" and d["TopK"] != 1:
        raise ConfigError(f"Decode.TopK {d['TopK']}{where} has no effect with Sampling: greedy; set Sampling: top-k "
                          "or TopK: 1")
    for section in ("Prefill", "Decode"):
        lanes = data[section]["QuantLanes"]
        if lanes & (lanes - 1):
            raise ConfigError(f"{section}.QuantLanes {lanes}{where} must be a power of two (1 .. 128)")
    if d["DSPPacking"] and d["BP"] % 2:
        raise ConfigError(f"Decode.DSPPacking{where}: two output lanes share a DSP48E2, Decode.BP must be even, "
                          f"got {d['BP']}")
    if p["DSPLanes"] % 2 or p["DSPLanes"] > d["BP"]:
        raise ConfigError(f"Prefill.DSPLanes {p['DSPLanes']}{where}: an even number of the prefill engine's "
                          f"{d['BP']} output lanes (Decode.BP; two lanes share a DSP48E2)")
    board = BOARDS[data["Board"]]
    hbm_channels = board.hbm_channels
    # the KV cache shares the weight ports' channels (layers/flexllm_kv_cache.h)
    channels = d["BP"] + HBM_PARAM_CHANNELS
    if channels > hbm_channels:
        raise ConfigError(f"Decode.BP {d['BP']}{where}: {d['BP']} weight ports + {HBM_PARAM_CHANNELS} parameter "
                          f"channels = {channels} HBM channels, the {data['Board'].upper()} has {hbm_channels}; use "
                          f"Decode.BP <= {hbm_channels - HBM_PARAM_CHANNELS}")
    if d["BP"] < 2:
        raise ConfigError(f"Decode.BP {d['BP']}{where}: at least 2 weight ports (the KV cache's K and V buffers share "
                          "their HBM channels)")
    if data["Part"] != board.part:
        raise ConfigError(f"Part {data['Part']!r}{where} is not the part of Board {data['Board']!r} "
                          f"({board.part}, platform {board.platform}; {board.source_file})")
    hmt_spec_of(data["HMT"], source)


def hmt_spec_of(section: Dict[str, Any], source: str = "", **switches):
    """The HMTSpec of a validated HMT section (sizes checked against each other)."""
    from brevitas_models.hmt.spec import HMTSpec
    try:
        return HMTSpec(segment_length=section["SegmentLength"], sensory_tokens=section["SensoryTokens"],
                       memory_slots=section["MemorySlots"], summary_tokens=section["SummaryTokens"],
                       recall_scale=section["RecallScale"], recall_residual=section["RecallResidual"],
                       **switches)
    except ValueError as e:
        raise ConfigError(f"{e}{' in ' + source if source else ''}") from None


HMT_MAX_RING_BYTES = 16 * 2 ** 20     # memories + keys in URAM (the U280 has 960 x 36 KB = 33.75 MB of URAM)


def check_hmt_buildable(data: Dict[str, Any], source: str = "", hidden_size: Optional[int] = None) -> None:
    """The limits of HMT in the generated project (flexllm build): one segment's main pass is one prefill
    of SegmentLength rows (<= Prefill.MaxSeqLen), decode continues from the last main pass's KV cache
    (SegmentLength <= Decode.MaxContext), and the ring of memories and keys fits its URAM budget."""
    h = data["HMT"]
    if not h["Enabled"]:
        return
    where = f" in {source}" if source else ""
    spec = hmt_spec_of(h, source)
    p, d = data["Prefill"], data["Decode"]
    if spec.segment_length > p["MaxSeqLen"]:
        raise ConfigError(f"HMT.SegmentLength {spec.segment_length}{where} exceeds Prefill.MaxSeqLen {p['MaxSeqLen']}: "
                          "the main pass [P_n, sensory, block, P_n] is one prefill of SegmentLength rows")
    if spec.segment_length > d["MaxContext"]:
        raise ConfigError(f"HMT.SegmentLength {spec.segment_length}{where} exceeds Decode.MaxContext {d['MaxContext']}: "
                          "decode continues from the last segment's KV cache (up to SegmentLength - 1 positions)")
    if hidden_size is not None and 2 * spec.memory_slots * hidden_size * 4 > HMT_MAX_RING_BYTES:
        raise ConfigError(f"HMT.MemorySlots {spec.memory_slots}{where}: the ring of memories and keys "
                          f"(2 x {spec.memory_slots} x {hidden_size} fp32) exceeds its "
                          f"{HMT_MAX_RING_BYTES // 2 ** 20} MB URAM budget")


def parse_config(data: Dict[str, Any], source: str = "") -> FlexLLMConfig:
    bad = _non_finite(data)
    if bad:
        raise ConfigError(f"{bad}{' in ' + source if source else ''} must be a finite number, got "
                          f"{_lookup(data, bad)!r}")
    validated = _validate(data, SCHEMA, "", source)
    from .cost.board import BOARDS
    board = BOARDS[validated["Board"]]
    validated["Board"] = board.name                 # hls4ml's alveo-u280 -> u280
    if "Part" not in data:                          # the board's part unless the config names one
        validated["Part"] = board.part
    cross_checks(validated, source)
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


def _lookup(data, path):
    for part in re.split(r"\.|\[", path):
        if part.endswith("]"):
            data = data[int(part[:-1])]
        elif isinstance(data, dict):
            data = data.get(part)
    return data


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects a key given twice in one mapping (PyYAML keeps the last one silently)."""


def _construct_mapping(loader, node, deep=False):
    seen = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise ConfigError(f"duplicate key {key!r} at line {key_node.start_mark.line + 1} (first at line "
                              f"{seen[key]}){' in ' + loader.name if getattr(loader, 'name', None) else ''}")
        seen[key] = key_node.start_mark.line + 1
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_yaml(path: Path) -> Any:
    """The YAML document of ``path``; errors are one line naming the file, line and problem."""
    try:
        loader = _UniqueKeyLoader(path.read_text())
        loader.name = str(path)
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{path} is not valid YAML:{at}: {problem}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path} is not a UTF-8 text file ({e.reason})") from None


def load_config(path) -> FlexLLMConfig:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    data = load_yaml(p)
    if data is None:
        raise ConfigError(f"config file is empty: {p}")
    return parse_config(data, str(p))
