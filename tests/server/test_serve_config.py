"""``bastion serve``'s settings: flags over a file over BASTION_* variables, each checked by name."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from bastion.server.serve import build_parser, configs


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    build_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["serve", *argv])


def test_flags_win_over_the_file_and_the_file_over_the_environment(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BASTION_PORT", "9100")
    monkeypatch.setenv("BASTION_DRAIN_TIMEOUT_S", "7")
    monkeypatch.setenv("BASTION_MAX_N", "3")
    file = tmp_path / "serve.json"
    file.write_text(json.dumps({"port": 9200, "max_n": 4, "engine": {"max_num_seqs": 8, "block_size": 32}}))
    server, engine = configs(parse("--config", str(file), "--max-n", "5", "--max-num-seqs", "16", "model.gguf"))
    assert server.port == 9200 and server.max_n == 5 and server.drain_timeout_s == 7
    assert engine == {"max_num_seqs": "16", "block_size": 32, "model": "model.gguf"}


def test_short_flag_names_booleans_and_none(tmp_path: Path) -> None:
    server, engine = configs(parse("--drain-timeout", "2.5", "--insecure-no-auth", "--job-store", "none",
                                   "--enable-prefix-caching", "false", "--no-access-log"))
    assert server.drain_timeout_s == 2.5 and server.insecure_no_auth is True and server.job_store is None
    assert server.access_log is False
    assert engine == {"enable_prefix_caching": "false"}


@pytest.mark.parametrize(("argv", "field"), [
    (("--port", "70000"), "port"),
    (("--drain-timeout", "-1"), "drain_timeout_s"),
    (("--max-num-seqs", "0"), "max_num_seqs"),
    (("--kv-cache-dtype", "int3"), "kv_cache_dtype"),
])
def test_a_bad_value_names_its_field_before_anything_loads(argv: tuple[str, ...], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        configs(parse(*argv))
