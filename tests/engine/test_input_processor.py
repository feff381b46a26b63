"""InputProcessor: every prompt form becomes one checked EngineCoreRequest, and bad input is named."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import bastion
import pytest
from bastion.engine.input_processor import InputProcessor
from bastion.engine.request import Deadlines
from bastion.sampling.params import SamplingParams

BOS, VOCAB, CONTEXT = 1, 128, 16


class CharTokenizer:
    """One token per character (its code point, below VOCAB); BOS in front with special tokens."""

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return ([BOS] if add_special_tokens else []) + [ord(c) for c in text]

    def apply_chat_template(self, messages: Sequence[dict[str, Any]], add_generation_prompt: bool = True) -> str:
        turns = "".join(f"<{m['role']}>{m['content']}" for m in messages)
        return turns + ("<a>" if add_generation_prompt else "")


@pytest.fixture
def processor() -> InputProcessor:
    return InputProcessor(CharTokenizer(), vocab_size=VOCAB, max_model_len=CONTEXT)  # type: ignore[arg-type]


def test_text_token_and_chat_prompts(processor: InputProcessor) -> None:
    text = processor.process_inputs("t", "hi", SamplingParams(max_tokens=4))
    assert (text.prompt, text.prompt_token_ids) == ("hi", [BOS, ord("h"), ord("i")])
    ids = processor.process_inputs("i", [5, 6], None)  # None: the default params
    assert (ids.prompt, ids.prompt_token_ids, ids.params.temperature) == (None, [5, 6], 1.0)
    chat = processor.process_inputs("c", [{"role": "user", "content": "q"}], continuation="ab")
    # the template writes its own special tokens: no BOS is added in front of it
    assert chat.prompt == "<user>q<a>ab" and chat.prompt_token_ids == [ord(c) for c in chat.prompt]
    bare = processor.process_inputs("c", [{"role": "user", "content": "q"}], add_generation_prompt=False)
    assert bare.prompt == "<user>q"


def test_params_are_fitted_to_the_request(processor: InputProcessor) -> None:
    params = SamplingParams(max_tokens=50, min_tokens=40, output_kind="cumulative")
    request = processor.process_inputs("r", [5] * 10, params, output_kind="delta", priority=3, cache_salt="t",
                                       deadlines=Deadlines(total=1.0))
    assert (request.params.max_tokens, request.params.min_tokens) == (6, 6)  # the room the context leaves
    assert request.params.output_kind == "delta" and params.output_kind == "cumulative"
    assert (request.priority, request.cache_salt, request.deadlines) == (3, "t", Deadlines(total=1.0))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"prompt": "x", "params": {"temperature": 0.5}}, TypeError, "SamplingParams"),
        ({"prompt": 3}, TypeError, "prompt: expected"),
        ({"prompt": [1, True]}, TypeError, "prompt: expected"),
        ({"prompt": []}, ValueError, "empty"),
        ({"prompt": [VOCAB]}, ValueError, "vocabulary"),
        ({"prompt": [5] * CONTEXT}, bastion.PromptTooLong, "max_model_len"),
        ({"prompt": "x", "params": SamplingParams(stop_token_ids=[VOCAB])}, ValueError, "stop_token_ids"),
        ({"prompt": [5], "continuation": "x"}, ValueError, "continuation"),
        ({"prompt": "x", "priority": 1.5}, TypeError, "priority"),
        ({"prompt": "x", "cache_salt": 7}, TypeError, "cache_salt"),
        ({"prompt": "x", "deadlines": 1.0}, TypeError, "deadlines"),
    ],
)
def test_bad_input_is_named(processor: InputProcessor, kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        processor.process_inputs("r", **kwargs)


def test_prompt_too_long_is_a_value_error() -> None:
    assert issubclass(bastion.PromptTooLong, ValueError)
