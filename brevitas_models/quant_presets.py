"""Quantization presets: which Brevitas quantizer sits on which tensor, plus the offline recipe
(rotations, GPTQ, calibration) that the preset's defaults were measured best with.

A preset name alone gives the best quality we know how to reach (see the README table).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

ROTATIONS = ("none", "hadamard", "learned")
INPUT_KINDS = ("int8", "uint4_asym")
GPTQ_TARGETS = ("quantized", "unquantized", "float")     # see QuantSpec.gptq_target
# Linear-input sites that own a per-token input quantizer (k/v share q_proj's, up shares gate_proj's).
INPUT_SITES = ("q_proj", "o_proj", "gate_proj", "down_proj", "lm_head")
_SHARED_INPUT = {"k_proj": "q_proj", "v_proj": "q_proj", "up_proj": "gate_proj"}


@dataclass(frozen=True)
class QuantSpec:
    name: str
    weight_bits: Optional[int] = None        # None: float weights; else int per-channel symmetric
    input_quant: Optional[str] = None        # None | "int8" | "uint4_asym": per-token dynamic linear inputs
    qkv_bits: Optional[int] = None           # int8 static per-head Q/K/V after RoPE; KV cache stores them
    softmax_bits: Optional[int] = None       # uint8 static per-head softmax output
    rotation: str = "none"                   # "hadamard": R1 + R2 folded offline, R4 online; "learned":
    #                                          R1/R2 trained by Cayley SGD from the Hadamard ones, then folded
    gptq: bool = False                       # GPTQ weight rounding (else round to nearest)
    calibration_tokens: int = 4096           # real-text tokens for GPTQ Hessians and static scales
    calibration_ctx: int = 512
    # per-site exceptions to input_quant, e.g. (("down_proj", "int8"), ("lm_head", "int8")); a mapping
    # is accepted and stored as sorted pairs
    input_quant_overrides: Tuple[Tuple[str, str], ...] = ()
    weight_clip_search: bool = False         # per-channel weight scale searched before GPTQ (needs gptq)
    # what GPTQ aims at: "quantized" (plain GPTQ: the layer's outputs on its quantized inputs), "unquantized"
    # (the outputs on the same inputs before their quantizer) or "float" (the float model's outputs): min
    # ||X W^T - Xq Wq^T||, so the weights also absorb the input error (brevitas_models/calibration.py)
    gptq_target: str = "quantized"
    # per-site clip ratio r in (0, 1] of uint4_asym inputs (range [r min, r max]); unnamed sites: 1
    input_clip_ratios: Tuple[Tuple[str, float], ...] = ()
    # seam smoothing folded into the weights: (seam, alpha) pairs, seams qkv and gate_up (norm -> its
    # consumers), o_proj (v -> o) and down_proj (up -> down); see brevitas_models/smoothing.py
    seam_smoothing: Tuple[Tuple[str, float], ...] = ()
    # rotation == "learned": (key, value) pairs of ROTATION_TRAINING (Steps, LearningRate, Tokens), every
    # key present (defaults filled in); () for the other rotations. See brevitas_models/learned_rotation.py
    rotation_training: Tuple[Tuple[str, Any], ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "input_quant_overrides", _normalize_overrides(self.input_quant_overrides))
        object.__setattr__(self, "input_clip_ratios", _normalize_clips(self.input_clip_ratios))
        object.__setattr__(self, "seam_smoothing", _normalize_smoothing(self.seam_smoothing))
        if self.seam_smoothing and self.weight_bits is None and self.input_quant is None:
            raise ValueError("Quantization.SeamSmoothing needs a quantized preset (it only moves quantization "
                             "difficulty between activations and weights)")
        for site, _ in self.input_clip_ratios:
            if self.input_kind(site) != "uint4_asym":
                raise ValueError(f"Quantization.InputClipRatios.{site}: clipping applies to uint4_asym inputs; "
                                 f"{site} is {self.input_kind(site)!r}")
        if self.input_quant_overrides and self.input_quant is None:
            raise ValueError("Quantization.InputQuantOverrides needs quantized linear inputs (InputQuant)")
        if self.weight_bits is not None and self.weight_bits not in (2, 3, 4, 5, 6, 7, 8):
            raise ValueError(f"Quantization.weight_bits must be 2..8 or null, got {self.weight_bits!r}")
        if self.input_quant not in (None, "int8", "uint4_asym"):
            raise ValueError(
                f"Quantization.input_quant must be null, 'int8' or 'uint4_asym', got {self.input_quant!r}")
        for key in ("qkv_bits", "softmax_bits"):
            if getattr(self, key) not in (None, 8):
                raise ValueError(f"Quantization.{key} must be 8 or null, got {getattr(self, key)!r}")
        if self.rotation not in ROTATIONS:
            raise ValueError(f"Quantization.rotation must be one of {ROTATIONS}, got {self.rotation!r}")
        if self.rotation != "learned":
            if self.rotation_training:
                raise ValueError(f"Quantization.RotationTraining needs Rotation: learned (rotation is "
                                 f"{self.rotation!r})")
            object.__setattr__(self, "rotation_training", ())
        if self.rotation == "learned":
            object.__setattr__(self, "rotation_training", _normalize_rotation_training(self.rotation_training))
            if self.input_quant is None:
                raise ValueError("Quantization.Rotation: learned needs quantized linear inputs (InputQuant): "
                                 "the rotations are trained against the input quantization error")
            if self.seam_smoothing:
                raise ValueError("Quantization.Rotation: learned does not combine with SeamSmoothing")
            tokens = dict(self.rotation_training)["Tokens"]
            if tokens > min(self.calibration_tokens, self.calibration_ctx):
                raise ValueError(f"Quantization.RotationTraining.Tokens ({tokens}) exceeds CalibrationContext "
                                 f"({self.calibration_ctx}) or CalibrationTokens ({self.calibration_tokens}): "
                                 f"rotations train on windows of the calibration tokens only")
        if self.weight_clip_search and not self.gptq:
            raise ValueError("Quantization.WeightClipSearch needs GPTQ")
        if self.gptq_target not in GPTQ_TARGETS:
            raise ValueError(f"Quantization.GPTQTarget must be one of {list(GPTQ_TARGETS)}, got {self.gptq_target!r}")
        if self.gptq_target != "quantized" and not self.gptq:
            raise ValueError(f"Quantization.GPTQTarget: {self.gptq_target} needs GPTQ")
        if self.gptq and self.weight_bits is None:
            raise ValueError("Quantization.gptq needs integer weights (weight_bits)")
        if self.calibration_tokens <= 0 or self.calibration_ctx <= 0:
            raise ValueError("Quantization.calibration_tokens and calibration_ctx must be > 0")

    @property
    def is_float(self) -> bool:
        return (self.weight_bits is None and self.input_quant is None and self.qkv_bits is None
                and self.softmax_bits is None)

    @property
    def needs_calibration(self) -> bool:
        """Calibration tokens are needed (GPTQ, static scales, or rotation training)."""
        return (self.gptq or self.qkv_bits is not None or self.softmax_bits is not None
                or self.rotation == "learned")

    @property
    def rotated(self) -> bool:
        """R1/R2 folded and the online R4 on (Hadamard or learned R1/R2)."""
        return self.rotation != "none"

    def rotation_setting(self, key: str):
        """A RotationTraining value (Steps, LearningRate, Tokens) of a learned-rotation spec."""
        if self.rotation != "learned":
            raise ValueError(f"RotationTraining.{key}: rotation is {self.rotation!r}, not 'learned'")
        return dict(self.rotation_training)[key]

    def input_kind(self, site: str) -> Optional[str]:
        """The per-token input quantizer kind of a linear-input site (see INPUT_SITES)."""
        if site not in INPUT_SITES:
            raise ValueError(f"unknown linear-input site {site!r}; known: {INPUT_SITES}")
        return dict(self.input_quant_overrides).get(site, self.input_quant)

    def input_clip(self, site: str) -> float:
        """The clip ratio of a linear-input site (1.0: the exact min / max)."""
        if site not in INPUT_SITES:
            raise ValueError(f"unknown linear-input site {site!r}; known: {INPUT_SITES}")
        return dict(self.input_clip_ratios).get(site, 1.0)

    def replace(self, **changes) -> "QuantSpec":
        return dataclasses.replace(self, **changes)

    def paper_formats(self) -> "QuantSpec":
        """This spec without the techniques that keep the formats (input clipping, weight-clip search,
        GPTQ target): the paper's exact min / max and plain GPTQ, the baseline the benchmarks add
        techniques to."""
        return self.replace(input_clip_ratios=(), weight_clip_search=False, gptq_target="quantized")

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


def _normalize_overrides(value) -> Tuple[Tuple[str, str], ...]:
    if value is None:
        return ()
    items = value.items() if isinstance(value, dict) else value
    try:
        pairs = [(str(site), str(kind)) for site, kind in items]
    except (TypeError, ValueError):
        raise ValueError(f"Quantization.InputQuantOverrides must map sites to kinds, got {value!r}") from None
    seen = set()
    for site, kind in pairs:
        if site in _SHARED_INPUT:
            raise ValueError(f"Quantization.InputQuantOverrides.{site}: {site} shares the input quantizer of "
                             f"{_SHARED_INPUT[site]}; name {_SHARED_INPUT[site]}")
        if site not in INPUT_SITES:
            raise ValueError(f"Quantization.InputQuantOverrides: unknown site {site!r}; known: {list(INPUT_SITES)}")
        if kind not in INPUT_KINDS:
            raise ValueError(f"Quantization.InputQuantOverrides.{site} must be one of {list(INPUT_KINDS)}, "
                             f"got {kind!r}")
        if site in seen:
            raise ValueError(f"Quantization.InputQuantOverrides.{site} given twice")
        seen.add(site)
    return tuple(sorted(pairs))


def _normalize_clips(value) -> Tuple[Tuple[str, float], ...]:
    if value is None:
        return ()
    items = value.items() if isinstance(value, dict) else value
    try:
        pairs = [(str(site), ratio) for site, ratio in items]
    except (TypeError, ValueError):
        raise ValueError(f"Quantization.InputClipRatios must map sites to ratios, got {value!r}") from None
    out = {}
    for site, ratio in pairs:
        if site in _SHARED_INPUT:
            raise ValueError(f"Quantization.InputClipRatios.{site}: {site} shares the input quantizer of "
                             f"{_SHARED_INPUT[site]}; name {_SHARED_INPUT[site]}")
        if site not in INPUT_SITES:
            raise ValueError(f"Quantization.InputClipRatios: unknown site {site!r}; known: {list(INPUT_SITES)}")
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 < float(ratio) <= 1.0:
            raise ValueError(f"Quantization.InputClipRatios.{site} must be a number in (0, 1], got {ratio!r}")
        if site in out:
            raise ValueError(f"Quantization.InputClipRatios.{site} given twice")
        if float(ratio) != 1.0:
            out[site] = float(ratio)
    return tuple(sorted(out.items()))


# Quantization.RotationTraining keys: SpinQuant's 100 steps at learning rate 1.5 (cosine schedule);
# Tokens per step (one window of the calibration tokens; the windows are used in turn). 100 x 128 tokens:
# about 3 CPU minutes for SmolLM2-135M on one thread (benchmarks/rotation_training.py).
ROTATION_TRAINING = {"Steps": 100, "LearningRate": 1.5, "Tokens": 128}


def _normalize_rotation_training(value) -> Tuple[Tuple[str, Any], ...]:
    if value is None:
        value = {}
    items = value.items() if isinstance(value, dict) else value
    try:
        pairs = [(str(key), v) for key, v in items]
    except (TypeError, ValueError):
        raise ValueError(f"Quantization.RotationTraining must be a mapping of {list(ROTATION_TRAINING)}, "
                         f"got {value!r}") from None
    out = dict(ROTATION_TRAINING)
    seen = set()
    for key, v in pairs:
        if key not in ROTATION_TRAINING:
            raise ValueError(f"Quantization.RotationTraining: unknown key {key!r}; known: {list(ROTATION_TRAINING)}")
        if key in seen:
            raise ValueError(f"Quantization.RotationTraining.{key} given twice")
        seen.add(key)
        if key == "LearningRate":
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not float(v) > 0.0:
                raise ValueError(f"Quantization.RotationTraining.LearningRate must be a number > 0, got {v!r}")
            v = float(v)
        else:
            low = 0 if key == "Steps" else 2
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ValueError(f"Quantization.RotationTraining.{key} must be an integer >= {low}, got {v!r}")
        out[key] = v
    return tuple(sorted(out.items()))


SMOOTHING_SEAMS = ("qkv", "o_proj", "gate_up", "down_proj")  # brevitas_models/smoothing.py


def _normalize_smoothing(value) -> Tuple[Tuple[str, float], ...]:
    if value is None:
        return ()
    items = value.items() if isinstance(value, dict) else value
    try:
        pairs = [(str(seam), alpha) for seam, alpha in items]
    except (TypeError, ValueError):
        raise ValueError(f"Quantization.SeamSmoothing must map seams to alphas, got {value!r}") from None
    out = {}
    for seam, alpha in pairs:
        if seam not in SMOOTHING_SEAMS:
            raise ValueError(f"Quantization.SeamSmoothing: unknown seam {seam!r}; known: {list(SMOOTHING_SEAMS)}")
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= float(alpha) <= 1.0:
            raise ValueError(f"Quantization.SeamSmoothing.{seam} must be a number in [0, 1], got {alpha!r}")
        if seam in out:
            raise ValueError(f"Quantization.SeamSmoothing.{seam} given twice")
        out[seam] = float(alpha)
    return tuple(sorted(out.items()))


PRESETS: Dict[str, QuantSpec] = {
    "float": QuantSpec("float"),
    "w8a8": QuantSpec("w8a8", weight_bits=8, input_quant="int8", rotation="hadamard"),
    # GPTQ with the weight-clip search, aimed at the outputs of the unquantized inputs (README table on
    # SmolLM2-135M: 17.67 -> 16.69 -> 16.50)
    "w4a8": QuantSpec("w4a8", weight_bits=4, input_quant="int8", rotation="hadamard", gptq=True,
                      weight_clip_search=True, gptq_target="unquantized"),
    # The paper's formats (uint4 per-token inputs at every linear, int8 Q/K/V and KV, uint8 softmax) with
    # the two techniques that keep those formats and were measured to help on the pydoc protocol and on
    # held-out text (README table: 41.84 -> 27.69 on SmolLM2-135M): every uint4 input clipped to
    # 0.9 x [min, max], and the weight-clip search before GPTQ. (GPTQTarget: unquantized helps on the
    # calibration text's domain and hurts on held-out text at uint4: README.)
    "flexllm-w4a4": QuantSpec("flexllm-w4a4", weight_bits=4, input_quant="uint4_asym", qkv_bits=8,
                              softmax_bits=8, rotation="hadamard", gptq=True, weight_clip_search=True,
                              input_clip_ratios={site: 0.9 for site in INPUT_SITES}),
}


def _yield_preset_defaults(preset: QuantSpec, overrides: Dict[str, Any]) -> Dict[str, Any]:
    """Preset defaults that only make sense with other preset defaults step aside when the user changes
    those: the weight-clip search goes with GPTQ, and a preset clip ratio goes with a uint4 input at its
    site. Anything the user names explicitly is kept (and validated as given)."""
    out = dict(overrides)
    if out.get("gptq") is False:
        out.setdefault("weight_clip_search", False)
        out.setdefault("gptq_target", "quantized")
    if "input_clip_ratios" not in out and preset.input_clip_ratios:
        trial = preset.replace(**{k: v for k, v in out.items() if k in ("input_quant", "input_quant_overrides")},
                               input_clip_ratios=())
        kept = {site: r for site, r in preset.input_clip_ratios if trial.input_kind(site) == "uint4_asym"}
        if len(kept) != len(preset.input_clip_ratios):
            out["input_clip_ratios"] = kept
    return out


def quant_preset(name: str, **overrides) -> QuantSpec:
    if name not in PRESETS:
        raise ValueError(f"unknown quantization preset {name!r}; known: {sorted(PRESETS)}")
    fields = {f.name for f in dataclasses.fields(QuantSpec)} - {"name"}
    bad = sorted(set(overrides) - fields)
    if bad:
        raise ValueError(f"Quantization: unknown key(s) {bad}; allowed: {sorted(fields)}")
    return PRESETS[name].replace(**_yield_preset_defaults(PRESETS[name], overrides))
