"""EngineConfig: keyword, file and environment sources; bad values name their field."""

from __future__ import annotations

import json

import pytest
from bastion import EngineConfig


def test_keywords_validate_and_name_the_field() -> None:
    cfg = EngineConfig.build(max_num_seqs=8, block_size=32)
    assert cfg.max_num_seqs == 8 and cfg.block_size == 32 and cfg.enable_prefix_caching
    with pytest.raises(ValueError, match="max_num_seqs"):
        EngineConfig.build(max_num_seqs=0)
    with pytest.raises(ValueError, match="scheduling_policy"):
        EngineConfig.build(scheduling_policy="random")
    with pytest.raises(ValueError, match="not_a_knob"):
        EngineConfig.build(not_a_knob=1)
    assert cfg.activation_bits == 16 and EngineConfig.build(activation_bits=32).activation_bits == 32
    with pytest.raises(ValueError, match="activation_bits"):
        EngineConfig.build(activation_bits=8)  # int8 activations are not offered (see quant_gemv.h)


def test_file_sources_and_overrides(tmp_path) -> None:
    js = tmp_path / "engine.json"
    js.write_text(json.dumps({"max_num_batched_tokens": 512, "scheduling_policy": "priority"}))
    cfg = EngineConfig.from_file(js, max_num_seqs=4)
    assert (cfg.max_num_batched_tokens, cfg.scheduling_policy, cfg.max_num_seqs) == (512, "priority", 4)
    toml = tmp_path / "engine.toml"
    toml.write_text("block_size = 8\nmax_queued_requests = 100\n")
    assert EngineConfig.from_file(toml).max_queued_requests == 100
    bad = tmp_path / "engine.ini"
    bad.write_text("")
    with pytest.raises(ValueError, match="unsupported suffix"):
        EngineConfig.from_file(bad)


def test_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BASTION_MAX_NUM_SEQS", "12")
    monkeypatch.setenv("BASTION_ENABLE_PREFIX_CACHING", "false")
    cfg = EngineConfig.build()
    assert cfg.max_num_seqs == 12 and not cfg.enable_prefix_caching
    assert EngineConfig.build(max_num_seqs=3).max_num_seqs == 3  # keywords win over the environment
    monkeypatch.setenv("BASTION_BLOCK_SIZE", "-4")
    with pytest.raises(ValueError, match="block_size"):
        EngineConfig.build()
