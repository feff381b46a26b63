"""Host-side pieces of the CUDA path that run anywhere: the decode split plan (plain C++ bound in
every build), device discovery, and what the ``cuda`` ops backend says when it cannot be used."""

from __future__ import annotations

import bastion
import pytest
from bastion import _core

LLAMA_8B = {"num_heads": 32, "num_kv_heads": 8, "head_dim": 128}
H100_SMS = 132


def plan(
    *, num_seqs: int, max_blocks: int, block_size: int = 16, sliding_window: int = 0, num_sms: int = H100_SMS,
    **heads: int,
) -> dict[str, int]:
    shape = {**LLAMA_8B, **heads}
    return _core.cuda.decode_plan(
        num_seqs=num_seqs, block_size=block_size, max_blocks_per_seq=max_blocks, sliding_window=sliding_window,
        num_sms=num_sms, **shape,
    )


def test_large_batch_fills_the_gpu_without_splitting() -> None:
    p = plan(num_seqs=64, max_blocks=512)  # 512 CTAs for 132 SMs
    assert p["num_splits"] == 1
    assert p["workspace_bytes"] == 0
    assert p["split_tokens"] == 512 * 16


def test_single_long_sequence_is_split_and_covered_exactly() -> None:
    context = 8192
    p = plan(num_seqs=1, max_blocks=context // 16)
    assert p["num_splits"] > 1
    assert p["split_tokens"] >= 256  # never below the minimum split length
    assert p["num_splits"] * p["split_tokens"] >= context  # every token is in some split
    assert (p["num_splits"] - 1) * p["split_tokens"] < context  # and no split starts past the end
    assert p["workspace_bytes"] == 1 * 32 * p["num_splits"] * (128 + 1) * 4


def test_short_context_is_not_split_below_minimum_length() -> None:
    assert plan(num_seqs=1, max_blocks=16)["num_splits"] == 1  # 256 tokens: one split's worth


@pytest.mark.parametrize(("window", "splits"), [(300, 1), (1000, 3), (4096, 16)])
def test_sliding_window_bounds_the_split_range(window: int, splits: int) -> None:
    p = plan(num_seqs=1, max_blocks=4096, sliding_window=window)  # the table alone would allow 64k tokens
    assert p["num_splits"] == splits
    assert p["num_splits"] * p["split_tokens"] >= window
    assert p["split_tokens"] >= 256


@pytest.mark.parametrize(
    ("num_heads", "num_kv_heads", "max_group", "head_chunks"),
    [(8, 8, 1, 1), (8, 4, 2, 1), (12, 4, 4, 1), (32, 8, 4, 1), (28, 4, 8, 1), (64, 8, 8, 1), (32, 2, 8, 2)],
)
def test_gqa_group_maps_to_a_tile(num_heads: int, num_kv_heads: int, max_group: int, head_chunks: int) -> None:
    p = plan(num_seqs=8, max_blocks=8, num_heads=num_heads, num_kv_heads=num_kv_heads)
    assert (p["max_group"], p["head_chunks"]) == (max_group, head_chunks)


def test_more_sms_means_more_splits() -> None:
    small = plan(num_seqs=2, max_blocks=1024, num_sms=16)
    large = plan(num_seqs=2, max_blocks=1024, num_sms=132)
    assert small["num_splits"] < large["num_splits"]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"head_dim": 96}, "head_dim must be 64 or 128"),
        ({"num_heads": 30}, "multiple of num_kv_heads"),
        ({"num_sms": 0}, "num_sms"),
        ({"block_size": 0}, "block_size"),
        ({"sliding_window": -1}, "sliding_window"),
        ({"num_seqs": 70000}, "65535"),
    ],
)
def test_unsupported_shapes_raise_value_error(override: dict[str, int], message: str) -> None:
    args = {"num_seqs": 4, "max_blocks": 8, **override}
    with pytest.raises(ValueError, match=message):
        plan(**args)


def test_cuda_available_agrees_with_the_device_count() -> None:
    count = _core.cuda_device_count()
    assert count >= 0
    assert bastion.cuda_available() == (bool(_core.with_cuda) and count > 0)


@pytest.mark.skipif(_core.with_cuda, reason="this build has the CUDA kernels")
def test_backend_reports_why_it_is_unavailable_without_cuda_build() -> None:
    from bastion.ops import available_backends

    reason = available_backends()["cuda"]
    assert "BASTION_CUDA=ON" in reason
