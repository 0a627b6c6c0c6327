"""Checks that need the config, the checkpoint's header and the board -- and nothing else.

``flexllm build`` runs :func:`preflight` before it loads or calibrates a model (minutes), so every
error that can be known from these three fails in well under a second, naming the key or the file.
The memory plan (``project/builder.py: plan_buffers``) checks the exact sizes again after packing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .config import HBM_PARAM_CHANNELS, ConfigError, FlexLLMConfig, check_hmt_buildable

if TYPE_CHECKING:
    from brevitas_models.arch import LlamaArch

MAX_RUNTIME_POSITIONS = 8192        # brevitas_models.model.LlamaModel caps its RoPE table here


def model_arch(cfg: FlexLLMConfig) -> "LlamaArch":
    """The architecture of ``Model`` from the checkpoint's header (HF config.json, GGUF metadata)."""
    from brevitas_models.sources import load_arch

    m = cfg["Model"]
    if m["Source"] is None and not m["Architecture"]:
        raise ConfigError(f"Model{cfg._where()} needs Source or Architecture")
    try:
        return load_arch(m["Source"], m["Architecture"])
    except (ValueError, TypeError, FileNotFoundError) as e:
        raise ConfigError(f"Model{cfg._where()}: {e}") from None


def linear_weight_count(arch: "LlamaArch") -> int:
    """Weights of every quantized linear (7 per layer + the LM head)."""
    h, f = arch.hidden_size, arch.intermediate_size
    q, kv = arch.num_heads * arch.head_dim, arch.num_kv_heads * arch.head_dim
    per_layer = h * q + 2 * h * kv + q * h + 3 * h * f
    return arch.num_layers * per_layer + arch.vocab_size * h


def preflight(cfg: FlexLLMConfig) -> "LlamaArch":
    """Everything checkable before a model is built; returns the model's architecture."""
    from brevitas_models.golden import hardware_scheme_problems
    from brevitas_models.quant_presets import INPUT_SITES

    from .project.spec import HBM_CHANNEL_BYTES

    where = cfg._where()
    from .cost.board import BOARDS
    board = BOARDS[cfg["Board"]]
    if not board.project_generation:
        raise ConfigError(f"Board {board.name!r}{where}: its board file {board.source_file} says "
                          "project_generation: false; it is modeled for estimates and `flexllm dse` only "
                          "(flexllm build writes projects for the U280 (Vitis) and the V80 (AVED))")
    check_hmt_buildable(cfg.data, str(cfg.path) if cfg.path else "")
    spec = cfg.quant_spec()
    problems = hardware_scheme_problems(spec)
    if problems:
        raise ConfigError(f"Quantization.Preset {spec.name!r}{where} cannot run on the FlexLLM hardware: "
                          + "; ".join(problems))
    kinds = {spec.input_kind(site) for site in INPUT_SITES}
    if len(kinds) > 1 and spec.weight_bits != 4:
        # per-site kinds run on ONE per-call engine whose int8 calls are two nibble passes on the int4 datapath
        sites = ", ".join(f"{s}: {k}" for s, k in spec.input_quant_overrides)
        raise ConfigError(f"Quantization.InputQuantOverrides ({sites}){where}: per-site input kinds need int4 weights "
                          f"(the linear engine runs int8 calls as two nibble passes of its int4 datapath); the preset "
                          f"{spec.name!r} has {spec.weight_bits}-bit weights")
    arch = model_arch(cfg)
    check_hmt_buildable(cfg.data, str(cfg.path) if cfg.path else "", arch.hidden_size)
    d = cfg["Decode"]
    positions = min(arch.max_position_embeddings, MAX_RUNTIME_POSITIONS)
    if d["MaxContext"] > positions:
        raise ConfigError(f"Decode.MaxContext {d['MaxContext']}{where} exceeds the model's {positions} positions")
    if d["TopK"] > arch.vocab_size:
        raise ConfigError(f"Decode.TopK {d['TopK']}{where} exceeds the vocabulary ({arch.vocab_size} tokens)")
    from .project.spec import kv_lanes, kv_port_bytes
    lanes = kv_lanes(d["KVParallel"], d["BP"])
    kv_bytes = kv_port_bytes(arch.num_layers, arch.num_kv_heads, d["MaxContext"], arch.head_dim, lanes)
    per_port = linear_weight_count(arch) * spec.weight_bits / 8 / d["BP"]
    if kv_bytes + per_port > HBM_CHANNEL_BYTES:
        raise ConfigError(f"Decode.MaxContext {d['MaxContext']}{where}: a KV port buffer needs {kv_bytes / 2**20:.1f} MB "
                          f"beside {per_port / 2**20:.1f} MB of weights, over the 256 MB of one HBM channel "
                          f"({arch.num_layers} layers x {arch.num_kv_heads} KV heads x {arch.head_dim}, spread over "
                          f"{lanes} K and {lanes} V ports); reduce Decode.MaxContext or raise Decode.KVParallel / BP")
    if per_port > HBM_CHANNEL_BYTES:
        need = -(-int(linear_weight_count(arch) * spec.weight_bits / 8) // HBM_CHANNEL_BYTES)
        raise ConfigError(f"Decode.BP {d['BP']}{where}: {per_port / 2**20:.0f} MB of weights per port, over the "
                          f"256 MB of one HBM channel; use Decode.BP >= {need} "
                          f"(at most {32 - HBM_PARAM_CHANNELS})")
    if cfg["Prefill"]["MaxSeqLen"] > positions:
        raise ConfigError(f"Prefill.MaxSeqLen {cfg['Prefill']['MaxSeqLen']}{where} exceeds the model's "
                          f"{positions} positions")
    for key, used in (("Decode.DSPPacking", d["DSPPacking"]), ("Prefill.DSPLanes", cfg["Prefill"]["DSPLanes"] > 0)):
        # uint4 inputs, or a per-call engine (uint4 and int8 sites: int8 calls as nibbles, still 4-bit operands)
        if used and ("uint4_asym" not in kinds or spec.weight_bits != 4 or
                     max(arch.hidden_size, arch.intermediate_size) > 8192):
            raise ConfigError(f"{key}{where} packs int4 x uint4 products (uint4 inputs, int4 weights, "
                              f"d_in <= 8192): the model has {spec.weight_bits}-bit weights, {spec.input_quant} inputs")
    check_hardware_budget(cfg, arch, spec)
    return arch


def check_hardware_budget(cfg: FlexLLMConfig, arch, spec) -> None:
    """Both kernels against the board's resources (the cost model, flexllm_plugin/cost), before any model
    is built: a ConfigError naming the kernel, resource and module when a budget is exceeded."""
    from .cost.from_config import models_of_config

    for model in models_of_config(cfg, arch, spec).values():
        try:
            model.check_budget()
        except ValueError as e:
            raise ConfigError(f"{e}{cfg._where()}: reduce the lanes of Prefill / Decode "
                              "(TP, WP, BP, HP, KVParallel)") from None
