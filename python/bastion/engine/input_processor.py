"""``InputProcessor``: a caller's raw request in, a checked ``EngineCoreRequest`` out (vLLM's
``Processor.process_inputs``).

Every front end (``LLM``, ``AsyncLLM``, the Gateway's ``LocalBackend``) hands its requests through
here, so a request is checked once, before anything is queued, and a bad one raises an error
naming the problem: ``TypeError`` for a wrong kind of argument, ``ValueError`` for a bad value,
``bastion.PromptTooLong`` (a ValueError) for a prompt the context cannot hold. The prompt is a
string, token ids, or a chat conversation (rendered with the model's own chat template). A
``structured_outputs`` constraint is checked against the model's tokenizer by the grammar library
(cached per constraint), so a schema, regex or grammar it rejects raises ``ValueError`` naming
``structured_outputs.<field>`` here; the compile itself happens off the engine thread.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeGuard

from bastion.engine.request import Deadlines, EngineCoreRequest
from bastion.errors import PromptTooLong
from bastion.sampling.params import OutputKind, SamplingParams

if TYPE_CHECKING:
    from bastion.model import Tokenizer

ChatMessage = Mapping[str, Any]
Conversation = Sequence[ChatMessage]
PromptType = str | Sequence[int] | Conversation


def _is_token_ids(prompt: object) -> TypeGuard[Sequence[int]]:
    # bool is an int subclass, but True in a prompt is a caller bug, not token 1
    return isinstance(prompt, Sequence) and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt)


def _is_conversation(prompt: object) -> TypeGuard[Conversation]:
    return isinstance(prompt, Sequence) and bool(prompt) and all(isinstance(m, Mapping) for m in prompt)


class InputProcessor:
    """Checks requests against one engine's model: its tokenizer, vocabulary and context length."""

    def __init__(self, tokenizer: Tokenizer, vocab_size: int, max_model_len: int) -> None:
        """Serve a model with ``vocab_size`` tokens and a context of ``max_model_len`` tokens."""
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size
        self.max_model_len = max_model_len

    def process_inputs(
        self,
        request_id: str,
        prompt: PromptType,
        params: SamplingParams | None = None,
        *,
        priority: int = 0,
        cache_salt: str | None = None,
        deadlines: Deadlines | None = None,
        output_kind: OutputKind | None = None,
        continuation: str = "",
        add_generation_prompt: bool = True,
    ) -> EngineCoreRequest:
        """Check one request and return it ready to queue; raise before anything is queued if it is bad.

        ``params`` None means ``SamplingParams()``; ``output_kind`` overrides ``params.output_kind``
        (``LLM`` wants final outputs, the Gateway deltas, jobs cumulative ones). ``continuation`` is
        text the answer already begins with, appended to a text or chat prompt before tokenizing (the
        Gateway's mid-stream failover). ``add_generation_prompt`` applies to a chat prompt.
        ``params.max_tokens`` is cut to the room the context leaves after the prompt, where generation
        then ends with "length".
        """
        if not isinstance(request_id, str):
            raise TypeError(f"request_id must be a str, got {type(request_id).__name__}")
        params = SamplingParams() if params is None else params
        if not isinstance(params, SamplingParams):
            raise TypeError(f"params must be SamplingParams, got {type(params).__name__}")
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise TypeError(f"priority must be an int, got {type(priority).__name__}")
        if cache_salt is not None and not isinstance(cache_salt, str):
            raise TypeError(f"cache_salt must be a str or None, got {type(cache_salt).__name__}")
        if deadlines is not None and not isinstance(deadlines, Deadlines):
            raise TypeError(f"deadlines must be Deadlines or None, got {type(deadlines).__name__}")
        text, ids = self._tokenize(prompt, continuation, add_generation_prompt)
        self._check_prompt(ids)
        params.validate_against(self.vocab_size)
        if params.structured_outputs is not None:
            from bastion.sampling.grammar.compiler import (
                compiler_for,  # the grammar library loads on first use
            )

            compiler_for(self.tokenizer, self.vocab_size).check(params.structured_outputs)
        changes: dict[str, Any] = {} if output_kind is None else {"output_kind": output_kind}
        room = self.max_model_len - len(ids)
        if params.max_tokens > room:
            changes.update(max_tokens=room, min_tokens=min(params.min_tokens, room))
        if changes:
            params = dataclasses.replace(params, **changes)  # re-checked by SamplingParams itself
        return EngineCoreRequest(request_id, text, ids, params, time.monotonic(), priority, cache_salt, deadlines)

    def prompt_token_ids(self, prompt: PromptType) -> list[int]:
        """The token ids ``prompt`` runs as, checked like ``process_inputs`` checks them (a server counts
        and refuses prompts with this before any work is queued)."""
        _, ids = self._tokenize(prompt, "", True)
        self._check_prompt(ids)
        return ids

    def _tokenize(self, prompt: PromptType, continuation: str, add_generation_prompt: bool
                  ) -> tuple[str | None, list[int]]:
        """The prompt's text (None for token ids) and its token ids."""
        if isinstance(prompt, str):
            text = prompt + continuation
            return text, self.tokenizer.encode(text)
        if _is_conversation(prompt):
            text = self.tokenizer.apply_chat_template(list(prompt), add_generation_prompt=add_generation_prompt)
            text += continuation
            # the template writes the special tokens itself (BOS included where the model wants one)
            return text, self.tokenizer.encode(text, add_special_tokens=False)
        if _is_token_ids(prompt):
            if continuation:
                raise ValueError("continuation: only a text or chat prompt can be continued")
            return None, [int(t) for t in prompt]
        raise TypeError("prompt: expected a str, a list of token ids or a list of chat messages, "
                        f"got {type(prompt).__name__}")

    def _check_prompt(self, prompt_token_ids: list[int]) -> None:
        """Raise naming the problem if these ids cannot be served."""
        n = len(prompt_token_ids)
        if n == 0:
            raise ValueError("prompt: empty prompt (no tokens to process)")
        if n >= self.max_model_len:
            raise PromptTooLong(
                f"prompt: {n} tokens does not fit the context (max_model_len={self.max_model_len}); "
                "shorten it or raise max_model_len"
            )
        bad = [t for t in prompt_token_ids if not (0 <= t < self.vocab_size)]
        if bad:
            raise ValueError(f"prompt_token_ids: ids out of vocabulary [0, {self.vocab_size}): {bad[:5]}")
