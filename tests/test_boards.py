"""Board files (flexllm_plugin/boards/*.yaml): they load, agree with the totals their sources cite, and the
config accepts the board names (short and hls4ml's)."""

import copy

import pytest
import yaml

from flexllm_plugin.config import ConfigError, parse_config
from flexllm_plugin.cost.board import BOARD_DIR, BOARDS, BoardError, load_board
from flexllm_plugin.cost.resources import KEYS
from flexllm_plugin.project.spec import HBM_CHANNEL_BYTES, HBM_CHANNELS, U280_PART, U280_PLATFORM


@pytest.mark.parametrize("path", sorted(BOARD_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_board_file_matches_its_cited_totals(path):
    raw = yaml.safe_load(path.read_text())
    b = load_board(path)
    cited = raw["cited"]
    assert b.device.as_dict() == cited["device"]
    assert b.slrs == cited["slrs"] == len(raw["resources"]["slrs"])
    for k in KEYS:                                        # SLRs add up to the device
        assert sum(s[k] for s in raw["resources"]["slrs"]) == cited["device"][k]
    assert b.hbm_channels * b.hbm_channel_bytes == cited["hbm_total_bytes"]
    assert b.hbm_channels * b.hbm_channel_peak_gbps == pytest.approx(cited["hbm_total_peak_gbps"])
    assert b.hbm_channel_gbps <= b.hbm_channel_peak_gbps
    assert raw["sources"], "a board file cites its sources"
    assert "unverified" in raw, "a board file says what could not be checked"


def test_u280_file_agrees_with_the_project_generator():
    b = BOARDS["u280"]
    assert (b.part, b.platform) == (U280_PART, U280_PLATFORM)
    assert (b.hbm_channels, b.hbm_channel_bytes) == (HBM_CHANNELS, HBM_CHANNEL_BYTES)
    assert b.hbm_channel_peak_gbps == pytest.approx(460 / 32)


def test_v80_memory_system():
    b = BOARDS["v80"]
    assert b.hbm_channels * b.hbm_channel_bytes == 32 * 2 ** 30                  # 32 GB HBM2e
    assert b.hbm_channel_peak_gbps == pytest.approx(64 * 3.2 / 8)                 # 64-bit PC at 3200 Mb/s
    assert b.unverified                                                          # says what is not checked


def test_inconsistent_board_file_is_refused(tmp_path):
    raw = yaml.safe_load((BOARD_DIR / "u280.yaml").read_text())
    bad = copy.deepcopy(raw)
    bad["resources"]["slrs"][0]["dsp"] += 1
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(BoardError, match="add up to dsp"):
        load_board(tmp_path / "bad.yaml")
    bad = copy.deepcopy(raw)
    bad["hbm"]["channels"] = 16
    (tmp_path / "bad2.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(BoardError, match="HBM 16"):
        load_board(tmp_path / "bad2.yaml")


def _cfg(**top):
    data = {"Model": {"Source": "preset:tiny"}, "Prefill": {"MaxSeqLen": 64, "ChunkTokens": 16},
            "Decode": {"MaxContext": 128, "MaxNewTokens": 32, "BP": 4}}
    data.update(top)
    return parse_config(data, "t.yaml")


@pytest.mark.parametrize("name,canonical", [("u280", "u280"), ("alveo-u280", "u280"), ("v80", "v80"),
                                            ("alveo-v80", "v80")])
def test_config_accepts_board_names(name, canonical):
    cfg = _cfg(Board=name)
    assert cfg["Board"] == canonical
    assert cfg["Part"] == BOARDS[canonical].part


def test_config_rejects_unknown_board_and_wrong_part():
    with pytest.raises(ConfigError, match="Board in t.yaml must be one of"):
        _cfg(Board="u250")
    with pytest.raises(ConfigError, match="is not the part of Board 'v80'"):
        _cfg(Board="v80", Part=U280_PART)


def test_v80_project_generation_passes_preflight():
    from flexllm_plugin.preflight import preflight
    arch = preflight(_cfg(Board="v80"))      # tests/test_v80_project.py builds and checks the project
    assert arch.num_layers > 0
