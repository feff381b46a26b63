"""``bastion.LLM``: the synchronous, batch-oriented API (vLLM's ``LLM`` shape)."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from typing import Any

from tqdm.auto import tqdm

from bastion.config import EngineConfig
from bastion.engine.engine_core import EngineCore
from bastion.engine.outputs import RequestOutput
from bastion.sampling import SamplingParams

PromptType = str | Sequence[int]
Messages = list[dict[str, str]]


class LLM:
    """Generate text with a local model, batching every prompt of a call together.

    ``LLM()`` serves the embedded SmolLM2-135M-Instruct; pass ``model=`` a GGUF file or a Hugging Face
    directory for another model. Keyword arguments are ``EngineConfig`` fields (validated; a bad
    value raises ValueError naming its field).
    """

    def __init__(self, model: str | None = None, **kwargs: Any) -> None:
        self.config = EngineConfig.build(model=model, **kwargs)
        self.engine = EngineCore(self.config)
        self._ids = itertools.count()

    @property
    def tokenizer(self) -> Any:
        """The model's tokenizer (encode / decode / apply_chat_template)."""
        return self.engine.tokenizer

    def _normalize(self, prompts: PromptType | Sequence[PromptType]) -> list[PromptType]:
        if isinstance(prompts, str):
            return [prompts]
        prompts = list(prompts)
        if prompts and all(isinstance(t, int) for t in prompts):
            return [prompts]  # one prompt given as token ids
        for i, p in enumerate(prompts):
            if not isinstance(p, str) and not (isinstance(p, Sequence) and all(isinstance(t, int) for t in p)):
                raise TypeError(f"prompts[{i}]: expected a str or a list of token ids, got {type(p).__name__}")
        return prompts

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
        prompts: PromptType | Sequence[PromptType],
        sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
        *,
        use_tqdm: bool = True,
        priority: Sequence[int] | None = None,
        cache_salt: str | None = None,
    ) -> list[RequestOutput]:
        """Complete every prompt; returns one finished ``RequestOutput`` per prompt, in order.

        Every prompt is validated before any is queued, so a bad one raises without side effects.
        """
        items = self._normalize(prompts)
        params = self._params_per_prompt(sampling_params, len(items))
        if priority is not None and len(priority) != len(items):
            raise ValueError(f"priority: got {len(priority)} values for {len(items)} prompts")
        encoded: list[tuple[str | None, list[int]]] = []
        for i, (item, p) in enumerate(zip(items, params)):
            ids = self.tokenizer.encode(item) if isinstance(item, str) else [int(t) for t in item]
            try:
                self.engine.validate_prompt(ids)
                p.validate_against(self.engine.model_config.vocab_size)
            except ValueError as e:
                raise ValueError(f"prompts[{i}]: {e}") from None
            encoded.append((item if isinstance(item, str) else None, ids))
        request_ids: list[str] = []
        try:
            for (text, ids), p, prio in zip(encoded, params, priority or [0] * len(items)):
                rid = f"llm-{next(self._ids)}"
                final = dataclasses.replace(p, output_kind="final_only")
                self.engine.add_request(rid, ids, final, prompt=text, priority=prio, cache_salt=cache_salt)
                request_ids.append(rid)
        except BaseException:  # all or nothing: a call that raises leaves no request behind
            for rid in request_ids:
                self.engine.abort(rid)
            raise
        return self._run(request_ids, use_tqdm)

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
        messages: Messages | Sequence[Messages],
        sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
        *,
        use_tqdm: bool = True,
        add_generation_prompt: bool = True,
    ) -> list[RequestOutput]:
        """Answer one conversation (a list of ``{"role", "content"}``) or a list of conversations."""
        if not messages:
            raise ValueError("messages: empty conversation")
        conversations = [messages] if isinstance(messages[0], dict) else list(messages)
        prompts = [self.tokenizer.apply_chat_template(c, add_generation_prompt=add_generation_prompt)
                   for c in conversations]
        token_prompts = [self.tokenizer.encode(p, add_special_tokens=False) for p in prompts]
        outs = self.generate(token_prompts, sampling_params, use_tqdm=use_tqdm)
        for out, text in zip(outs, prompts):
            out.prompt = text
        return outs

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
