"""flexllm dse --build-top K --out DIR: the K best designs of the search as configs and a Makefile that builds
and C-simulates each (fanned out by make -j, a batch scheduler through SUBMIT), and flexllm report DIR
collecting the results. On the tiny model with K = 2: the candidates are the two best of the search's ranking
(recomputed here from their modeled metrics), their configs load, the Makefile prefixes every heavy step with
SUBMIT, `make -j 2 csim` builds both projects and passes both C simulations, and the collector reports them."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from flexllm_plugin.cli import main
from flexllm_plugin.config import load_config
from flexllm_plugin.dse.search import score
from flexllm_plugin.dse.space import KNOBS

SPACE = ["--space", "Decode.BP=2,4", "--space", "Prefill.TP=4", "--space", "Prefill.ChunkTokens=16",
         "--space", "Decode.HP=1"]

pytestmark = pytest.mark.skipif(shutil.which("make") is None or shutil.which("g++") is None,
                                reason="needs make and g++")


def test_sweep_of_the_two_best_designs_builds_and_csims_through_make(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    assert main(["dse", "configs/tiny.yaml", "--objective", "decode", "--quiet", "--json", *SPACE,
                 "--build-top", "2", "--out", str(sweep)]) == 0
    result = json.loads(capsys.readouterr().out)
    data = json.loads((sweep / "sweep.json").read_text())
    ranked = data["ranked"]
    assert [score("decode", d["metrics"]) for d in ranked] == sorted(score("decode", d["metrics"]) for d in ranked)
    assert result["best"]["knobs"] == ranked[0]["knobs"]
    for i, c in enumerate(data["candidates"]):
        assert c["name"] == f"cand{i}" and c["knobs"] == ranked[i]["knobs"]
        cfg = load_config(sweep / c["name"] / "config.yaml")
        for knob in KNOBS:
            section, key = knob.split(".")
            assert cfg[section][key] == c["knobs"][knob]
    assert load_config(sweep / "best.yaml")["Decode"]["BP"] == ranked[0]["knobs"]["Decode.BP"]

    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    # a stand-in for a batch scheduler's blocking submit command (srun, qsub -sync y): log, then run
    submit = tmp_path / "submit.sh"
    submit.write_text(f"#!/bin/sh\necho \"$*\" >> {tmp_path / 'submitted.txt'}\nexec \"$@\"\n")
    submit.chmod(0o755)
    run = subprocess.run(["make", "-j", "2", "-C", str(sweep), "csim", f"SUBMIT={submit}"], capture_output=True,
                         text=True, env=env, timeout=1200)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    submitted = (tmp_path / "submitted.txt").read_text().splitlines()
    assert sorted(l.split(" build ")[1].split()[0] for l in submitted if " build " in l) == \
        ["cand0/config.yaml", "cand1/config.yaml"]
    assert sorted(l.split(" -C ")[1].split()[0] for l in submitted if " csim" in l) == \
        ["cand0/project", "cand1/project"]
    for c in ("cand0", "cand1"):
        assert (sweep / c / "csim.status").read_text().strip() == "0"

    assert main(["report", str(sweep), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in report["candidates"]] == ["cand0", "cand1"]
    for r, c in zip(report["candidates"], data["candidates"]):
        assert r["csim_status"] == 0 and r["project"] is True
        assert r["csim"]["prompt_tokens"] > 0 and r["csim"]["new_tokens"] > 0
        assert r["modeled"]["decode_tokens_per_s"] == c["metrics"]["decode_tokens_per_s"]
        assert r["csynth"] == {} and r["implementation"] == {}      # no Vitis here
    assert (sweep / "sweep_report.md").read_text().count("| pass |") == 2


def test_sweep_needs_a_directory_it_may_write(tmp_path, capsys):
    assert main(["dse", "configs/tiny.yaml", "--quiet", *SPACE, "--build-top", "2"]) == 2
    assert "--build-top K needs --out DIR" in capsys.readouterr().err
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    assert main(["dse", "configs/tiny.yaml", "--quiet", *SPACE, "--build-top", "2", "--out", str(busy)]) == 2
    assert "not a flexllm sweep directory" in capsys.readouterr().err
    assert (busy / "notes.txt").read_text() == "mine"
