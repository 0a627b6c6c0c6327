"""`flexllm hmt-train` and `flexllm ppl --long` on the tiny model: JSON results, the checkpoint cache,
clear errors before any model is loaded."""

import json

import pytest
import yaml

from flexllm_plugin.cli import main
from flexllm_plugin.resources import config_path


def _cfg(tmp_path, **hmt):
    data = yaml.safe_load(config_path("tiny.yaml").read_text())
    data["HMT"] = {"Enabled": True, "SegmentLength": 40, "SensoryTokens": 6, "MemorySlots": 4, **hmt}
    p = tmp_path / "hmt.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def _json(capsys, argv):
    rc = main(argv + ["--json", "--quiet"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    return json.loads(out.out)


def test_train_then_long_perplexity(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FLEXLLM_CACHE", str(tmp_path / "cache"))
    cfg = _cfg(tmp_path)
    rc = main(["ppl", str(cfg), "--long", "hmt", "--segments", "3", "--quiet"])
    assert rc == 2 and "run `flexllm hmt-train" in capsys.readouterr().err
    first = _json(capsys, ["hmt-train", str(cfg), "--steps", "3"])
    assert not first["cached"] and first["block"] == 32 and first["summary_tokens"] == 16
    assert first["checkpoint"].startswith(str(tmp_path / "cache" / "hmt"))
    again = _json(capsys, ["hmt-train", str(cfg), "--steps", "3"])
    assert again["cached"] and again["checkpoint"] == first["checkpoint"]
    # ppl --long hmt finds the checkpoint of the default settings only; point HMT.Checkpoint at this one
    cfg = _cfg(tmp_path, Checkpoint=first["checkpoint"])
    results = {m: _json(capsys, ["ppl", str(cfg), "--long", m, "--segments", "3"])
               for m in ("independent", "sensory", "hmt", "window")}
    assert {r["tokens"] for r in results.values()} == {2 * 31}
    assert results["hmt"]["checkpoint"] == first["checkpoint"]
    assert results["window"]["window"] == 256                  # the tiny model's positions
    # every mode runs on the checkpoint's backbone (its LoRA adapter merged); --backbone original on the weights
    assert first["lora_rank"] == 8 and {r["backbone"] for r in results.values()} == {"merged LoRA adapter"}
    orig = _json(capsys, ["ppl", str(cfg), "--long", "independent", "--segments", "3", "--backbone", "original"])
    assert orig["backbone"] == "original" and orig["checkpoint"] is None
    assert orig["tokens"] == results["independent"]["tokens"] and orig["ppl"] != results["independent"]["ppl"]


def test_bad_hmt_inputs_fail_fast(tmp_path, capsys):
    rc = main(["ppl", str(_cfg(tmp_path, SensoryTokens=38)), "--long", "sensory", "--quiet"])
    assert rc == 2 and "HMT.SegmentLength 40 leaves no room" in capsys.readouterr().err
    rc = main(["ppl", str(_cfg(tmp_path, Checkpoint=str(tmp_path / "none.pt"))), "--long", "hmt", "--quiet",
               "--segments", "3"])
    assert rc == 2 and "HMT checkpoint not found" in capsys.readouterr().err
    rc = main(["hmt-train", str(_cfg(tmp_path, RecallScale="learned")), "--quiet"])
    assert rc == 2 and "HMT.RecallScale" in capsys.readouterr().err
    rc = main(["hmt-train", str(_cfg(tmp_path)), "--steps", "0", "--quiet"])
    assert rc == 2 and "--steps must be positive" in capsys.readouterr().err
    rc = main(["hmt-train", str(_cfg(tmp_path)), "--text", str(tmp_path / "missing.txt"), "--quiet"])
    assert rc == 2 and "text file not found" in capsys.readouterr().err


def test_shipped_hmt_config():
    from flexllm_plugin.config import load_config
    spec = load_config(config_path("smollm2_135m_hmt.yaml")).hmt_spec()
    assert (spec.segment_length, spec.block, spec.summary, spec.sensory_tokens) == (256, 222, 111, 32)


def test_build_with_hmt_needs_trained_parameters(tmp_path, capsys):
    rc = main(["build", str(_cfg(tmp_path)), "--out", str(tmp_path / "prj"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "HMT.Checkpoint" in err and "flexllm hmt-train" in err
    assert not (tmp_path / "prj").exists()


def test_text_output_for_people(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FLEXLLM_CACHE", str(tmp_path / "cache"))
    cfg = _cfg(tmp_path)
    assert main(["ppl", str(cfg), "--quant", "float", "--long", "sensory", "--segments", "3", "--quiet",
                 "--backbone", "original"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("perplexity ") and "(sensory; segment length 40, block 32, sensory 6" in out
    assert main(["hmt-train", str(cfg), "--steps", "2", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("HMT parameters trained in ") and "checkpoint: " in out
