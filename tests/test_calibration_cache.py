"""The calibrated-model cache key covers every byte that affects the result, and `flexllm cache`."""

import hashlib
import json

import pytest
import torch
import yaml

from brevitas_models.build import _cache_key, cache_entries, clear_cache
from brevitas_models.quant_presets import quant_preset
from brevitas_models.sources import LoadedWeights
from flexllm_plugin.cli import main
from flexllm_plugin.resources import config_path
from helpers import tiny_weights, write_tiny_hf_dir


def _key(weights, spec=None, calib=None, max_positions=None):
    spec = spec or quant_preset("flexllm-w4a4", calibration_tokens=512, calibration_ctx=128)
    calib = torch.arange(512).reshape(4, 128) if calib is None else calib
    return _cache_key(weights, spec, calib, max_positions)


def _with(weights, name, fn):
    sd = {k: v.clone() for k, v in weights.state_dict.items()}
    fn(sd[name])
    return LoadedWeights(weights.arch, sd, weights.tokenizer, weights.source)


def test_key_covers_every_row_the_recipe_the_text_and_the_positions():
    w = tiny_weights()
    base = _key(w)
    assert _key(w) == base
    name = "model.layers.1.mlp.down_proj.weight"
    rows = w.state_dict[name].shape[0]
    for row in (1, rows // 2 + 1, rows - 1):          # rows the old sampled key skipped included
        changed = _with(w, name, lambda t: t[row].add_(1e-3))
        assert _key(changed) != base, row
    one_bit = _with(w, name, lambda t: t.view(torch.int32)[7, 3].bitwise_xor_(1))
    assert _key(one_bit) != base
    assert _key(w, quant_preset("flexllm-w4a4", calibration_tokens=512, calibration_ctx=128, gptq=False)) != base
    assert _key(w, calib=torch.arange(1, 513).reshape(4, 128)) != base
    assert _key(w, max_positions=512) != base


def test_key_covers_the_code_version(monkeypatch):
    import brevitas_models.build as build
    w = tiny_weights()
    base = _key(w)
    monkeypatch.setattr(build, "code_version", lambda: "something-else")
    assert _key(w) != base


def _digest(root):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((root / "weights").glob("*.bin"))}


def test_changed_weight_in_an_hf_directory_changes_the_built_project(tmp_path, monkeypatch):
    from safetensors.torch import load_file, save_file

    from flexllm_plugin.config import load_config
    from flexllm_plugin.project.builder import build_project

    cache = tmp_path / "cache"
    monkeypatch.setenv("FLEXLLM_CACHE", str(cache))
    hf = write_tiny_hf_dir(tmp_path / "hf")
    data = yaml.safe_load(config_path("tiny.yaml").read_text())
    data["Model"] = {"Source": f"hf:{hf}"}
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(data))

    build_project(load_config(cfg_path), tmp_path / "a")
    assert len(cache_entries(cache)) == 1
    build_project(load_config(cfg_path), tmp_path / "a2")          # cache hit: same project
    assert len(cache_entries(cache)) == 1 and _digest(tmp_path / "a2") == _digest(tmp_path / "a")

    sd = load_file(hf / "model.safetensors")
    sd["model.layers.1.mlp.down_proj.weight"][77] += 0.05      # one row far from the old key's samples
    save_file(sd, hf / "model.safetensors", metadata={"format": "pt"})
    build_project(load_config(cfg_path), tmp_path / "b")
    assert len(cache_entries(cache)) == 2                       # recalibrated, not the stale model
    assert _digest(tmp_path / "b") != _digest(tmp_path / "a")


def test_cache_list_and_clear(tmp_path, monkeypatch, capsys):
    from brevitas_models.build import build_model
    from helpers import tiny_spec

    cache = tmp_path / "cache"
    monkeypatch.setenv("FLEXLLM_CACHE", str(cache))
    (cache).mkdir()
    (cache / "unrelated.txt").write_text("not ours")
    build_model(tiny_weights(), tiny_spec("flexllm-w4a4", gptq=False), cache_dir=cache)
    assert main(["cache", "list", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["entries"]) == 1 and out["entries"][0]["source"] == "preset:tiny"
    assert main(["cache", "list"]) == 0
    assert "1 cached calibrated model(s)" in capsys.readouterr().out
    assert main(["cache", "clear"]) == 0
    assert "removed 1 cached model(s)" in capsys.readouterr().out
    assert cache_entries(cache) == [] and (cache / "unrelated.txt").is_file()
    assert clear_cache(cache) == 0


def test_key_covers_the_calibration_text_bytes_beyond_its_calibration_tokens():
    """Two calibration texts whose calibration windows are the same tokens still get different keys."""
    w = tiny_weights()
    spec = quant_preset("flexllm-w4a4", calibration_tokens=512, calibration_ctx=128)
    calib = torch.arange(512).reshape(4, 128)
    tail = "x" * 600
    a = _cache_key(w, spec, calib, None, "first text " + tail)
    b = _cache_key(w, spec, calib, None, "other text " + tail)
    assert a != b
    assert _cache_key(w, spec, calib, None, "first text " + tail) == a


def test_project_reference_state_is_a_byte_copy_of_the_cache_entry_only_when_the_states_agree(tmp_path):
    """A cache entry is written as the archive torch.save gives a project's reference/calibrated.pt; from a
    cache hit, save_reference copies the entry, byte for byte what torch.save of the model's state writes;
    a model changed after the hit is saved from its own state."""
    import zipfile

    from brevitas_models.build import build_model
    from flexllm_plugin.project.reference import STATE_FILE, save_reference, saved_state_equals

    weights = tiny_weights()
    spec = quant_preset("flexllm-w4a4", gptq=False, calibration_tokens=256, calibration_ctx=64)
    built = build_model(weights, spec, cache_dir=tmp_path / "cache")
    model = build_model(weights, spec, cache_dir=tmp_path / "cache")          # the cache hit
    entry = model.state_file
    assert entry == built.state_file and zipfile.ZipFile(entry).namelist()[0].startswith("calibrated/")
    assert saved_state_equals(entry, model.state_dict())                     # so save_reference copies it
    (tmp_path / "plain" / "reference").mkdir(parents=True)
    torch.save(model.state_dict(), tmp_path / "plain" / STATE_FILE)
    save_reference(tmp_path, weights, model)
    assert (tmp_path / STATE_FILE).read_bytes() == (tmp_path / "plain" / STATE_FILE).read_bytes()

    with torch.no_grad():
        model.lm_head.weight[0, 0] += 1.0
    assert not saved_state_equals(entry, model.state_dict())
    save_reference(tmp_path, weights, model)
    saved = torch.load(tmp_path / STATE_FILE, weights_only=True)
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())
