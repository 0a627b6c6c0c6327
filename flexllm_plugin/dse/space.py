"""The knobs a design-space search explores, their candidate values, and which kernel each one shapes.

Knob names are config key paths (``Decode.BP``). Prefill and decode are separate kernels (two xclbins)
that share the HBM layout: ``Decode.BP`` (weight ports; also the prefill engine's output lanes),
``Decode.HP`` and ``Decode.KVParallel`` (the attention unit of both kernels) are SHARED; ``Decode.WP`` and
``Decode.DSPPacking`` shape the decode kernel only; ``Prefill.TP``, ``Prefill.WP`` and
``Prefill.ChunkTokens`` the prefill kernel only (``flexllm_plugin/cost/from_config.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

from brevitas_models.quant_presets import INPUT_SITES

from ..config import HBM_PARAM_CHANNELS, SCHEMA, ConfigError

SHARED = ("Decode.BP", "Decode.HP", "Decode.KVParallel")
DECODE_ONLY = ("Decode.WP", "Decode.DSPPacking", "Decode.QuantLanes")
PREFILL_ONLY = ("Prefill.ChunkTokens", "Prefill.TP", "Prefill.WP", "Prefill.QuantLanes", "Prefill.DSPLanes")
KNOBS = SHARED + DECODE_ONLY + PREFILL_ONLY

WP_CHOICES = (8, 16, 32, 64, 128)
PREFILL_WP_CHOICES = (8, 16, 24, 32, 48, 64, 96, 128)
TP_CHOICES = (2, 4, 8, 16, 32)
CHUNK_CHOICES = (16, 32, 64, 128)
KV_CHOICES = (2, 4, 8, 16)          # KEY_LANES <= 16 (the softmax sums' loop-carried distance)
QUANT_CHOICES = (16, 32, 64)
DSP_LANE_CHOICES = (0, 8, 16)        # prefill output lanes on DSPs (two int4 x uint4 products per DSP48E2)


@dataclass(frozen=True)
class Space:
    """Ordered candidate values per knob (order matters: the local search moves to adjacent values)."""
    values: Tuple[Tuple[str, Tuple], ...]

    def __getitem__(self, knob: str) -> Tuple:
        return dict(self.values)[knob]

    @property
    def knobs(self) -> Tuple[str, ...]:
        return tuple(k for k, _ in self.values)

    def as_dict(self) -> Dict[str, List]:
        return {k: list(v) for k, v in self.values}

    def size(self, knobs: Sequence[str] = KNOBS) -> int:
        n = 1
        for k in knobs:
            n *= len(self[k])
        return n


def make_space(values: Dict[str, Sequence]) -> Space:
    unknown = sorted(set(values) - set(KNOBS))
    if unknown:
        raise ConfigError(f"design-space knob {unknown[0]!r} is not searchable; knobs: {list(KNOBS)}")
    missing = [k for k in KNOBS if k not in values]
    if missing:
        raise ConfigError(f"design space misses knob {missing[0]!r}")
    out = []
    for k in KNOBS:
        vals = tuple(values[k])
        if not vals:
            raise ConfigError(f"design-space knob {k} has no candidate values")
        section, key = k.split(".")
        check = SCHEMA[section][key][1]
        for v in vals:
            problem = check(v)
            if problem:
                raise ConfigError(f"design-space value {k}={v!r}: {problem}")
        out.append((k, tuple(sorted(set(vals), key=lambda x: (x is True, x)))))
    return Space(tuple(out))


def default_space(cfg, arch, spec, board) -> Space:
    """Candidate values for a model on a board: every BP from the fewest ports whose HBM channels hold the
    weights to all channels left after the parameter channels (the KV cache shares the weight channels); MAC
    widths up to one HBM word
    of weight codes; head lanes dividing the GQA group; chunks up to the longest prompt."""
    from ..preflight import linear_weight_count

    weight_bytes = linear_weight_count(arch) * spec.weight_bits / 8
    bp_lo = max(2, -(-int(weight_bytes) // board.hbm_channel_bytes))     # >= 2: a K and a V buffer
    bp_hi = min(32, board.hbm_channels - HBM_PARAM_CHANNELS)              # the KV cache shares their channels
    if bp_lo > bp_hi:
        raise ConfigError(f"the weights ({weight_bytes / 2 ** 20:.0f} MB) need {bp_lo} HBM channels of "
                          f"{board.hbm_channel_bytes / 2 ** 20:.0f} MB; the {board.name} leaves {bp_hi} for weights")
    bps = sorted({bp_lo, bp_hi, *range(2 * -(-bp_lo // 2), bp_hi + 1, 2)})
    cpw = 128 if spec.weight_bits == 4 else 64
    group = arch.num_heads // arch.num_kv_heads
    p, d = cfg["Prefill"], cfg["Decode"]
    # as preflight: some site uint4 (a per-call engine runs int8 calls as 4-bit nibbles), int4 weights
    kinds = {spec.input_kind(site) for site in INPUT_SITES}
    dsp_ok = ("uint4_asym" in kinds and spec.weight_bits == 4
              and max(arch.hidden_size, arch.intermediate_size) <= 8192)
    return make_space({
        "Decode.BP": bps,
        "Decode.HP": [h for h in range(1, group + 1) if group % h == 0],
        "Decode.KVParallel": [k for k in KV_CHOICES if k <= d["MaxContext"]],
        "Decode.WP": [w for w in WP_CHOICES if w <= cpw],
        "Decode.DSPPacking": [False, True] if dsp_ok else [False],
        "Decode.QuantLanes": list(QUANT_CHOICES),
        "Prefill.QuantLanes": [32, 64],
        "Prefill.DSPLanes": list(DSP_LANE_CHOICES) if dsp_ok else [0],
        "Prefill.ChunkTokens": [c for c in CHUNK_CHOICES if c <= p["MaxSeqLen"]] or [p["MaxSeqLen"]],
        "Prefill.TP": list(TP_CHOICES),
        "Prefill.WP": [w for w in PREFILL_WP_CHOICES if w <= cpw],
    })


def parse_space_overrides(space: Space, items: Sequence[str]) -> Space:
    """``["Decode.BP=4,8,16", "Decode.DSPPacking=false"]`` replace those knobs' candidate values."""
    import yaml

    values = space.as_dict()
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--space {item!r}: expected KNOB=V1,V2,... (knobs: {list(KNOBS)})")
        k, vs = item.split("=", 1)
        if k not in values:
            raise ConfigError(f"--space {item!r}: unknown knob {k!r}; knobs: {list(KNOBS)}")
        values[k] = [yaml.safe_load(v) for v in vs.split(",") if v.strip()]
    return make_space(values)
