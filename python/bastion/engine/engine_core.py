"""The synchronous engine: one ``step()`` = scheduler step → one forward → sampler → output processor
→ scheduler update (→ tokens a grammar forces appended: jump-forward).

Single-threaded by design: ``LLM`` drives it in the caller's thread, ``AsyncLLM`` from its own
engine thread. Requests arrive checked by the ``InputProcessor``; a fault while processing one
request fails that request alone, and a fault in the shared forward pass fails only the requests
of that step. Either way their KV blocks go back to the pool at once. A request with
``structured_outputs`` enters the scheduler only once its grammar has compiled (``StructuredOutputManager``).
"""

from __future__ import annotations

import hashlib
import random
import time

import numpy as np
import torch

from bastion import _core
from bastion.config import EngineConfig
from bastion.engine.model_runner import ModelRunner
from bastion.engine.output_processor import OutputProcessor
from bastion.engine.outputs import FinishReason, RequestMetrics, RequestOutput
from bastion.engine.placement import plan_kernel_backends, plan_memory, resolve_device, resolve_kv_dtype
from bastion.engine.request import EngineCoreRequest, EngineRequest
from bastion.engine.structured_outputs import StructuredOutputManager
from bastion.model import load_model
from bastion.model.loader import model_footprint, resolve_dtype
from bastion.sampling import Sampler, SequenceState


def salt_to_key(cache_salt: str | None) -> int:
    """A stable 63-bit key for a cache salt (tenant isolation of the prefix cache); 0 = no salt."""
    if not cache_salt:
        return 0
    return int.from_bytes(hashlib.blake2b(cache_salt.encode(), digest_size=8).digest(), "little") >> 1


class EngineCore:
    """Owns the model, its KV cache, the C++ scheduler and the per-request Python state."""

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        if config.num_threads is not None:
            torch.set_num_threads(config.num_threads)
        self.device = resolve_device(config.device)
        dtype = resolve_dtype(config.dtype, self.device)
        # checked before the weights load: a backend that cannot run here fails the construction at once
        ops_backends, sampler_backends = plan_kernel_backends(config.kernel_backend, self.device, dtype)
        # so is the memory: weights and the smallest cache must fit the budget before a weight is read
        footprint = model_footprint(config.model, device=self.device, dtype=dtype, dequantize=config.dequantize_weights)
        kv_dtype = resolve_kv_dtype(config.kv_cache_dtype, self.device, dtype, ops_backends)
        self.memory = plan_memory(config, footprint, kv_dtype, self.device)
        self.loaded = load_model(config.model, device=self.device, dtype=dtype,
                                 quantize_weights=config.quantize_weights, dequantize=config.dequantize_weights,
                                 footprint=footprint)
        self.loaded.model.set_ops_backends(ops_backends)
        self.tokenizer = self.loaded.tokenizer
        self.model_config = self.loaded.config
        self.max_model_len, num_blocks = self.memory.max_model_len, self.memory.num_blocks
        self.scheduler = _core.Scheduler(
            num_blocks, config.block_size, config.max_num_seqs, config.max_num_batched_tokens,
            self.max_model_len, enable_prefix_caching=config.enable_prefix_caching,
            policy=config.scheduling_policy, hash_seed=config.prefix_cache_seed,
            long_prefill_token_threshold=config.long_prefill_token_threshold,
        )
        self.runner = ModelRunner(self.loaded, num_blocks, config.block_size, self.device, config=config,
                                  kv_dtype=self.memory.kv_dtype)
        self.sampler = Sampler(backend=sampler_backends["sample"], mask_backend=sampler_backends["apply_token_bitmask"])
        self.output_processor = OutputProcessor(self.tokenizer)
        self.structured = StructuredOutputManager(
            self.tokenizer, self.model_config.vocab_size, self.device, timeout_s=config.structured_outputs_timeout,
            jump_forward=config.structured_outputs_jump_forward, max_rows=config.max_num_seqs,
            threads=config.num_threads)
        self.requests: dict[str, EngineRequest] = {}
        self._by_core_id: dict[int, EngineRequest] = {}
        self._deferred: dict[int, tuple[int, int]] = {}  # core id -> (priority, salt key) until its grammar is ready
        self._finished_outside_step: list[EngineRequest] = []
        self._next_core_id = 1
        # unseeded requests get a seed from this stream: a run is reproducible under EngineConfig.seed
        self._seeds = random.Random(config.seed)

    # ----- admission -------------------------------------------------------------------------
    def add_request(self, request: EngineCoreRequest) -> None:
        """Queue one request made by the ``InputProcessor``; ValueError if its id is still in use."""
        rid, ids, params = request.request_id, request.prompt_token_ids, request.params
        previous = self.requests.get(rid)
        # A finished request whose final output is not taken yet (aborted since the last step) no
        # longer holds its id: a caller retrying under the same id right after an abort must not be
        # refused. Its final output still comes first, from the list it already sits in.
        if previous is not None and not previous.finished:
            raise ValueError(f"request_id: {rid!r} is already in use")
        core_id = self._next_core_id
        self._next_core_id += 1
        constrained = params.structured_outputs is not None
        if not constrained:
            self.scheduler.add_request(core_id, np.asarray(ids, dtype=np.int32), priority=request.priority,
                                       cache_salt=salt_to_key(request.cache_salt))
        req = EngineRequest(
            request_id=rid, core_id=core_id, prompt=request.prompt, prompt_token_ids=ids, params=params,
            metrics=RequestMetrics(arrival_time=request.arrival_time),
            seq=SequenceState(params, ids, self.output_processor.eos_token_ids,
                              default_seed=self._seeds.getrandbits(63)),
            stop=self.output_processor.stop_checker(params, ids),
        )
        self.requests[rid] = req
        self._by_core_id[core_id] = req
        if constrained:  # waits outside the scheduler until its grammar compiles
            req.in_scheduler = False
            self._deferred[core_id] = (request.priority, salt_to_key(request.cache_salt))
            self.structured.submit(req)

    # ----- cancellation ----------------------------------------------------------------------
    def abort(self, request_id: str, reason: FinishReason = "abort", detail: str | None = None) -> bool:
        """Stop a request now and free its KV blocks; its final output comes with the next step.

        Returns False when the request is unknown or already finished.
        """
        req = self.requests.get(request_id)
        if req is None or req.finished:
            return False
        if req.in_scheduler:
            self.scheduler.abort(req.core_id)
        else:
            self.structured.discard(req)
            self._deferred.pop(req.core_id, None)
        if reason == "timeout":
            req.metrics.timeout_reason = detail
        elif reason == "error":
            req.metrics.error = detail
        self._finish(req, reason)
        self._finished_outside_step.append(req)
        return True

    # ----- the step --------------------------------------------------------------------------
    def has_unfinished(self) -> bool:
        """True while any request is queued, running or has an output not yet returned."""
        return bool(self.requests)

    def step(self) -> list[RequestOutput]:
        """Run one engine step; return the outputs due (per each request's output_kind)."""
        touched: list[EngineRequest] = self._finished_outside_step
        self._finished_outside_step = []
        if self.structured.num_waiting:
            self._admit_constrained(touched)
        step = self.scheduler.step()
        now = time.monotonic()
        for core_id in step.preempted_ids:
            req = self._by_core_id.get(int(core_id))
            if req is not None:
                req.metrics.num_preemptions += 1
        for core_id in step.finished_ids:  # the core ends a request that reaches its longest length
            req = self._by_core_id.get(int(core_id))
            if req is not None and not req.finished:
                self._finish(req, "length")
                touched.append(req)
        scheduled = [self._by_core_id[int(i)] for i in step.req_ids]
        for req in scheduled:
            if req.metrics.first_scheduled_time is None:
                req.metrics.first_scheduled_time = now
        if scheduled:
            touched.extend(self._run(step, scheduled))
        return self._collect(touched)

    def _run(self, step: _core.StepOutput, scheduled: list[EngineRequest]) -> list[EngineRequest]:
        sampling = [req for req, flag in zip(scheduled, step.do_sample) if flag]
        try:
            bitmask_of_step = self.structured.prepare_bitmask(sampling)
            logits = self.runner.execute(step)
            bitmask = bitmask_of_step()
            sampled = self.sampler.sample(logits, [r.seq for r in sampling], bitmask)
        except Exception as exc:  # the shared forward failed: fail only this step's requests
            return self._fail_step(scheduled, sampling, f"{type(exc).__name__}: {exc}")
        token_ids = sampled.token_ids.tolist()
        now = time.monotonic()
        finished_core_ids: list[int] = []
        for i, req in enumerate(sampling):
            try:
                self._append_token(req, token_ids[i], sampled.logprobs[i] if sampled.logprobs else None, now)
            except Exception as exc:  # a fault in one request's post-processing fails it alone
                req.metrics.error = f"{type(exc).__name__}: {exc}"
                self._finish(req, "error")
            if req.finished:
                finished_core_ids.append(req.core_id)
        self.scheduler.update(np.asarray(token_ids, dtype=np.int32), np.asarray(finished_core_ids, dtype=np.int64))
        if bitmask is not None:
            for req in sampling:
                if req.grammar is not None and not req.finished:
                    self._jump_forward(req, now)
        return sampling

    # ----- structured outputs ----------------------------------------------------------------
    def _admit_constrained(self, touched: list[EngineRequest]) -> None:
        """Queue the constrained requests whose grammar is ready; fail those whose compile failed or timed out.

        When nothing else is in flight the engine waits (briefly) for a grammar instead of spinning.
        """
        if len(self._by_core_id) == self.structured.num_waiting:
            self.structured.wait(0.02)
        ready, failed = self.structured.ready()
        for req, error in failed:
            self._deferred.pop(req.core_id, None)
            req.metrics.error = error
            self._finish(req, "error")
            touched.append(req)
        for req in ready:
            priority, salt = self._deferred.pop(req.core_id)
            try:
                self.scheduler.add_request(req.core_id, np.asarray(req.prompt_token_ids, dtype=np.int32),
                                           priority=priority, cache_salt=salt)
            except ValueError as exc:  # e.g. a prompt the KV pool can never hold
                req.metrics.error = str(exc)
                self._finish(req, "error")
                touched.append(req)
                continue
            req.in_scheduler = True
            self._jump_forward(req, time.monotonic())  # a grammar may force the output's first tokens
            if req.finished:
                touched.append(req)

    def _jump_forward(self, req: EngineRequest, now: float) -> None:
        """Append the tokens ``req``'s grammar forces without a model step each (the next step computes them
        together, like a prefill chunk); they count as generated tokens and pass the stop checks."""
        try:
            forced = self.structured.forced_tokens(req)
            if not forced:
                return
            appended = self.scheduler.append_tokens(req.core_id, np.asarray(forced, dtype=np.int32))
            m = req.metrics
            for token in forced[:appended]:
                m.num_generated_tokens += 1
                m.num_forced_tokens += 1
                if m.first_token_time is not None:
                    m.last_token_time = now
                self._keep_token(req, token, None)
                if req.finished:
                    break
        except Exception as exc:  # a fault in one request's grammar fails it alone
            req.metrics.error = f"{type(exc).__name__}: {exc}"
            self._finish(req, "error")
        if req.finished:
            self.scheduler.abort(req.core_id)  # blocks back now (False when the core already ended it)

    def _fail_step(self, scheduled: list[EngineRequest], sampling: list[EngineRequest],
                   error: str) -> list[EngineRequest]:
        """Close the step in the scheduler (freeing every block of its requests) and fail them."""
        self.scheduler.update(np.zeros(len(sampling), dtype=np.int32),
                              np.asarray([r.core_id for r in sampling], dtype=np.int64))
        sampling_ids = {r.core_id for r in sampling}
        for req in scheduled:
            if req.core_id not in sampling_ids:
                self.scheduler.abort(req.core_id)
            req.metrics.error = error
            self._finish(req, "error")
        return scheduled

    def _append_token(self, req: EngineRequest, token: int, logprobs: dict | None, now: float) -> None:
        m = req.metrics
        if m.first_token_time is None:
            m.first_token_time = now
            m.num_cached_tokens = self.scheduler.num_cached_tokens(req.core_id)
        m.last_token_time = now
        m.num_generated_tokens += 1
        self._keep_token(req, token, logprobs)

    def _keep_token(self, req: EngineRequest, token: int, logprobs: dict | None) -> None:
        """Record one token on ``req`` (grammar, penalty counts, text, stop decision) and finish it if due.

        A grammar that has ended finishes the request with "stop", also when max_tokens was reached with
        the same token.
        """
        grammar = req.grammar
        if grammar is not None and not grammar.accept(token):
            raise ValueError(f"structured_outputs.{grammar.kind}: token {token} breaks the grammar: {grammar.error}")
        req.seq.append(token)
        decision = self.output_processor.process_token(req, token, logprobs)
        reason, stop_reason = decision.finish_reason, decision.stop_reason
        if grammar is not None and grammar.is_stopped and reason != "stop":
            if reason is None:
                req.stop.end()
            reason, stop_reason = "stop", None
        if reason is not None:
            self._finish(req, reason, stop_reason)

    def _finish(self, req: EngineRequest, reason: FinishReason, stop_reason: str | int | None = None) -> None:
        if req.finish_reason is None and req.in_scheduler:
            req.metrics.num_preemptions = max(req.metrics.num_preemptions,
                                              self.scheduler.num_preemptions(req.core_id))
        req.finish(reason, time.monotonic(), stop_reason)

    def _collect(self, touched: list[EngineRequest]) -> list[RequestOutput]:
        outputs: list[RequestOutput] = []
        for req in touched:
            out = self.output_processor.make_output(req)
            if out is not None:
                outputs.append(out)
            if req.finished:
                if self.requests.get(req.request_id) is req:  # not a newer request reusing the id
                    del self.requests[req.request_id]
                self._by_core_id.pop(req.core_id, None)
        return outputs

    # ----- introspection ---------------------------------------------------------------------
    def stats(self) -> dict:
        """Scheduler and KV-cache figures (see LLM.stats)."""
        return dict(self.scheduler.stats())
