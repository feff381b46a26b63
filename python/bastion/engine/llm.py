"""``bastion.LLM``: the synchronous, batch-oriented API (vLLM's ``LLM`` shape)."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

from tqdm.auto import tqdm

from bastion.config import EngineConfig
from bastion.engine.engine_core import EngineCore
from bastion.engine.input_processor import Conversation, InputProcessor, PromptType
from bastion.engine.outputs import RequestOutput
from bastion.engine.request import EngineCoreRequest
from bastion.sampling import SamplingParams

if TYPE_CHECKING:
    from bastion.model import Tokenizer

TextOrTokens = str | Sequence[int]


class LLM:
    """Generate text with a local model, batching every prompt of a call together.

    ``LLM()`` serves the embedded SmolLM2-135M-Instruct; pass ``model=`` a GGUF file or a Hugging Face
    directory for another model. Keyword arguments are ``EngineConfig`` fields (validated; a bad
    value raises ValueError naming its field).
    """

    def __init__(self, model: str | None = None, **kwargs: Any) -> None:
        self.config = EngineConfig.build(model=model, **kwargs)
        self.engine = EngineCore(self.config)
        self.processor = InputProcessor(self.engine.tokenizer, self.engine.model_config.vocab_size,
                                        self.engine.max_model_len)
        self._ids = itertools.count()

    @property
    def tokenizer(self) -> Tokenizer:
        """The model's tokenizer (encode / decode / apply_chat_template)."""
        return self.engine.tokenizer

    @staticmethod
    def _prompt_list(prompts: TextOrTokens | Sequence[TextOrTokens]) -> list[PromptType]:
        """One prompt or a list of them, as a list (each one is checked by the input processor)."""
        if isinstance(prompts, str):
            return [prompts]
        items = list(prompts)
        if items and all(isinstance(t, int) for t in items):
            return [cast(list[int], items)]  # one prompt given as token ids
        return cast(list[PromptType], items)  # a list of prompts

    def _params_per_prompt(self, params: SamplingParams | Sequence[SamplingParams] | None,
                           n: int) -> list[SamplingParams]:
        if params is None:
            params = SamplingParams()
        if isinstance(params, SamplingParams):
            return [params] * n
        params = list(params)
        if len(params) != n:
            raise ValueError(f"sampling_params: got {len(params)} for {n} prompts (give one, or one per prompt)")
        return params

    def generate(
        self,
        prompts: TextOrTokens | Sequence[TextOrTokens],
        sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
        *,
        use_tqdm: bool = True,
        priority: Sequence[int] | None = None,
        cache_salt: str | None = None,
    ) -> list[RequestOutput]:
        """Complete every prompt; returns one finished ``RequestOutput`` per prompt, in order.

        Every prompt is checked before any is queued, so a bad one raises without side effects.
        """
        return self._generate(self._prompt_list(prompts), sampling_params, use_tqdm=use_tqdm, priority=priority,
                              cache_salt=cache_salt)

    def _generate(self, prompts: Sequence[PromptType], sampling_params: SamplingParams | Sequence[SamplingParams] | None,
                  *, use_tqdm: bool, priority: Sequence[int] | None = None, cache_salt: str | None = None,
                  add_generation_prompt: bool = True) -> list[RequestOutput]:
        """``generate`` over prompts of any kind the input processor takes (``chat`` passes conversations)."""
        params = self._params_per_prompt(sampling_params, len(prompts))
        if priority is not None and len(priority) != len(prompts):
            raise ValueError(f"priority: got {len(priority)} values for {len(prompts)} prompts")
        requests: list[EngineCoreRequest] = []
        for i, (prompt, p, prio) in enumerate(zip(prompts, params, priority or [0] * len(prompts))):
            try:
                requests.append(self.processor.process_inputs(
                    f"llm-{next(self._ids)}", prompt, p, priority=prio, cache_salt=cache_salt,
                    output_kind="final_only", add_generation_prompt=add_generation_prompt))
            except (TypeError, ValueError) as e:  # same type (PromptTooLong included), naming the prompt
                raise type(e)(f"prompts[{i}]: {e}") from None
        added: list[str] = []
        try:
            for request in requests:
                self.engine.add_request(request)
                added.append(request.request_id)
        except BaseException:  # all or nothing: a call that raises leaves no request behind
            for rid in added:
                self.engine.abort(rid)
            raise
        return self._run(added, use_tqdm)

    def _run(self, request_ids: list[str], use_tqdm: bool) -> list[RequestOutput]:
        results: dict[str, RequestOutput] = {}
        wanted = set(request_ids)
        with tqdm(total=len(request_ids), desc="generate", unit="req", disable=not use_tqdm) as bar:
            while len(results) < len(request_ids):
                for out in self.engine.step():
                    if out.finished and out.request_id in wanted:
                        results[out.request_id] = out
                        bar.update(1)
        return [results[r] for r in request_ids]

    def chat(
        self,
        messages: Conversation | Sequence[Conversation],
        sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
        *,
        use_tqdm: bool = True,
        add_generation_prompt: bool = True,
    ) -> list[RequestOutput]:
        """Answer one conversation (a list of ``{"role", "content"}``) or a list of conversations."""
        if not messages:
            raise ValueError("messages: empty conversation")
        if isinstance(messages[0], Mapping):  # one conversation
            conversations = [cast(Conversation, messages)]
        else:
            conversations = list(cast(Sequence[Conversation], messages))
        return self._generate(conversations, sampling_params, use_tqdm=use_tqdm,
                              add_generation_prompt=add_generation_prompt)

    def stats(self) -> dict:
        """KV and queue figures: num_total_blocks, num_free_blocks, num_running, num_waiting,
        prefix_cache_hits, prefix_cache_queries, num_preemptions, kv_cache_usage."""
        return self.engine.stats()

    def close(self) -> None:
        """Abort whatever is still queued or running; their KV blocks go back to the pool."""
        for rid in list(self.engine.requests):
            self.engine.abort(rid)
        self.engine.step()

    def __enter__(self) -> LLM:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
