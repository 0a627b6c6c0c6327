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


def _plain(weights):
    """The same weights in a plain dict (keyed on their bytes, not on a fingerprint)."""
    return LoadedWeights(weights.arch, dict(weights.state_dict), weights.tokenizer, weights.source)


def test_key_covers_every_row_the_recipe_the_text_and_the_positions():
    w = _plain(tiny_weights())
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


def test_random_weights_are_keyed_on_their_fingerprint_and_a_cache_hit_never_generates_them(tmp_path):
    """Seeded random weights (LazyRandomStateDict) are generated on first use only, equal random_state_dict,
    and key the cache by their generator's inputs: another seed or shape is another key, and a build that
    hits the cache never generates (or hashes) them."""
    import dataclasses

    from brevitas_models.build import build_model
    from brevitas_models.loaders.random_init import LazyRandomStateDict, random_state_dict
    from brevitas_models.sources import load_source

    w = load_source("preset:tiny")           # a fresh one (tiny_weights() is shared between tests)
    assert isinstance(w.state_dict, LazyRandomStateDict)
    base = _key(w)
    assert w.state_dict._tensors is None                         # keyed without generating
    for change in (dict(seed=w.arch.seed + 1), dict(intermediate_size=w.arch.intermediate_size + 64)):
        arch = dataclasses.replace(w.arch, **change)
        assert _key(LoadedWeights(arch, LazyRandomStateDict(arch), w.tokenizer, w.source)) != base, change
    want = random_state_dict(w.arch)
    assert list(w.state_dict) == list(want)
    assert all(torch.equal(w.state_dict[k], v) for k, v in want.items())

    spec = quant_preset("flexllm-w4a4", gptq=False, calibration_tokens=256, calibration_ctx=64)
    built = build_model(load_source("preset:tiny"), spec, cache_dir=tmp_path)              # calibrates: generates
    fresh = load_source("preset:tiny")
    hit = build_model(fresh, spec, cache_dir=tmp_path)
    assert hit.state_file == built.state_file and fresh.state_dict._tensors is None
    assert all(torch.equal(a, b) for a, b in zip(built.state_dict().values(), hit.state_dict().values()))


def test_saved_state_equals_reads_the_bytes_torch_load_gives(tmp_path):
    """The streamed comparison of saved_state_equals agrees with comparing the torch.load-ed tensors: equal
    states, a one-bit change in any dtype, another order, a tensor saved as a view of a larger storage (and a
    pickle that is not a plain state dict, compared through torch.load)."""
    from flexllm_plugin.project.reference import STATE_FILE, saved_state_equals

    path = tmp_path / STATE_FILE
    path.parent.mkdir()
    g = torch.Generator().manual_seed(0)
    big = torch.randn(6, 5, generator=g)
    state = {"a": torch.randn(40, 7, generator=g), "b": torch.arange(9), "c": torch.randn(3, 3, generator=g).bfloat16(),
             "view": big[2:4], "empty": torch.zeros(0, 4), "flag": torch.tensor([True, False])}
    torch.save(state, path)
    assert saved_state_equals(path, state)
    for name in state:
        if state[name].numel():
            changed = dict(state)
            t = state[name].clone()
            t.view(torch.uint8).view(-1)[t.element_size() - 1] ^= 1
            changed[name] = t
            assert not saved_state_equals(path, changed), name
    assert not saved_state_equals(path, dict(reversed(list(state.items()))))
    assert not saved_state_equals(path, {**state, "view": big[1:3]})
    torch.save({"nested": {"a": torch.ones(2)}}, path)
    assert saved_state_equals(path, {"nested": {"a": torch.ones(2)}}) is False     # not a state dict: no crash
    other = tmp_path / "other.pt"
    torch.save(state, other)
    assert not saved_state_equals(other, state)            # archive not named after the state file
