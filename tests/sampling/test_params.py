"""SamplingParams: vLLM defaults, normalisation, and a ValueError naming the field for each bad value."""

from __future__ import annotations

import dataclasses
import math

import bastion
import pytest
from bastion.sampling.params import SamplingParams


def test_public_name_and_vllm_defaults() -> None:
    params = bastion.SamplingParams()
    assert params is not None and bastion.SamplingParams is SamplingParams
    assert (params.n, params.max_tokens, params.temperature, params.top_k, params.top_p, params.min_p) == (
        1, 16, 1.0, 0, 1.0, 0.0,
    )
    assert (params.repetition_penalty, params.presence_penalty, params.frequency_penalty) == (1.0, 0.0, 0.0)
    assert params.seed is None and params.stop == () and params.stop_token_ids == ()
    assert params.logprobs is None and params.min_tokens == 0 and params.output_kind == "cumulative"
    assert params.skip_special_tokens and not params.ignore_eos and not params.include_stop_str_in_output
    assert not params.is_greedy and not params.has_penalties


def test_normalisation() -> None:
    params = SamplingParams(stop="###", stop_token_ids=[7, 7, 3], top_k=-1, temperature=0)
    assert params.stop == ("###",)
    assert params.stop_token_ids == (7, 3)
    assert params.top_k == 0
    assert params.is_greedy
    assert SamplingParams(stop=["a", "bc", "a"]).stop == ("a", "bc")
    assert SamplingParams(presence_penalty=0.5).has_penalties


def test_frozen_and_replace_revalidates() -> None:
    params = SamplingParams()
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.temperature = 2.0  # type: ignore[misc]
    with pytest.raises(ValueError, match="temperature"):
        dataclasses.replace(params, temperature=-0.5)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"n": 2}, "n"),
        ({"n": True}, "n"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": True}, "max_tokens"),
        ({"max_tokens": 3.0}, "max_tokens"),
        ({"max_tokens": None}, "max_tokens"),
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": math.nan}, "temperature"),
        ({"temperature": math.inf}, "temperature"),
        ({"temperature": "hot"}, "temperature"),
        ({"top_k": -2}, "top_k"),
        ({"top_k": 1.5}, "top_k"),
        ({"top_k": False}, "top_k"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.01}, "top_p"),
        ({"top_p": math.nan}, "top_p"),
        ({"top_p": 5e-324}, "top_p"),  # > 0 in float64 but 0 in the sampler's float32: it failed a whole step
        ({"repetition_penalty": 1e-46}, "repetition_penalty"),
        ({"min_p": -0.1}, "min_p"),
        ({"min_p": 1.5}, "min_p"),
        ({"repetition_penalty": 0.0}, "repetition_penalty"),
        ({"repetition_penalty": -1.0}, "repetition_penalty"),
        ({"repetition_penalty": math.inf}, "repetition_penalty"),
        ({"presence_penalty": 2.5}, "presence_penalty"),
        ({"frequency_penalty": -2.5}, "frequency_penalty"),
        ({"frequency_penalty": True}, "frequency_penalty"),
        ({"seed": 1.0}, "seed"),
        ({"seed": True}, "seed"),
        ({"seed": 2**64}, "seed"),
        ({"stop": ""}, "stop"),
        ({"stop": ["ok", ""]}, "stop"),
        ({"stop": [1]}, "stop"),
        ({"stop": 5}, "stop"),
        ({"stop_token_ids": [-1]}, "stop_token_ids"),
        ({"stop_token_ids": [True]}, "stop_token_ids"),
        ({"stop_token_ids": 3}, "stop_token_ids"),
        ({"include_stop_str_in_output": 1}, "include_stop_str_in_output"),
        ({"ignore_eos": "yes"}, "ignore_eos"),
        ({"skip_special_tokens": None}, "skip_special_tokens"),
        ({"min_tokens": -1}, "min_tokens"),
        ({"min_tokens": 17}, "min_tokens"),
        ({"min_tokens": 5, "max_tokens": 4}, "min_tokens"),
        ({"logprobs": 21}, "logprobs"),
        ({"logprobs": -1}, "logprobs"),
        ({"logprobs": True}, "logprobs"),
        ({"output_kind": "stream"}, "output_kind"),
    ],
)
def test_bad_value_names_its_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError) as excinfo:
        SamplingParams(**kwargs)
    assert str(excinfo.value).startswith(field), excinfo.value


@pytest.mark.parametrize(
    "kwargs",
    [
        {"temperature": 0.0},
        {"temperature": 2},
        {"top_k": 1},
        {"top_p": 1e-9},
        {"min_p": 1.0},
        {"presence_penalty": -2, "frequency_penalty": 2},
        {"seed": -5},
        {"seed": 2**64 - 1},
        {"min_tokens": 16},
        {"logprobs": 0},
        {"logprobs": 20},
        {"output_kind": "delta"},
        {"output_kind": "final_only"},
    ],
)
def test_boundary_values_accepted(kwargs: dict) -> None:
    params = SamplingParams(**kwargs)
    for name, value in kwargs.items():
        assert getattr(params, name) == value


def test_validate_against_vocab() -> None:
    params = SamplingParams(stop_token_ids=[3, 100])
    params.validate_against(101)
    with pytest.raises(ValueError, match=r"stop_token_ids \[100\].*size 100"):
        params.validate_against(100)
    with pytest.raises(ValueError, match="vocab_size"):
        params.validate_against(0)
