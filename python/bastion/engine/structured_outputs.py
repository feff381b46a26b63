"""``StructuredOutputManager`` (vLLM's name): the grammars of the engine's constrained requests.

A request with ``structured_outputs`` is checked by the input processor (a constraint llguidance
rejects never gets here) and then waits outside the C++ scheduler while its grammar compiles on the
compiler's thread pool (vLLM's WAITING_FOR_FSM): the engine keeps stepping the batch and admits the
request at the first step after its compile finishes. A compile that fails, or outlasts
``EngineConfig.structured_outputs_timeout``, ends the request with finish reason "error" naming it.

Once admitted, the request's ``GrammarMatcher`` lives on the request (``EngineRequest.grammar``); each
step this manager fills the token bitmask of the step's constrained rows, and after each kept token it
reports the tokens the grammar forces next (jump-forward), which the engine appends without a model
step each.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from bastion.sampling.grammar import (
    BitmaskFiller,
    CompiledGrammar,
    GrammarCompiler,
    GrammarMatcher,
    compiler_for,
)
from bastion.sampling.token_bitmask import TokenBitmask

if TYPE_CHECKING:
    from bastion.engine.request import EngineRequest
    from bastion.model import Tokenizer


@dataclass
class _Pending:
    """A request waiting for its grammar."""

    request: EngineRequest
    future: Future[CompiledGrammar]
    deadline: float


class StructuredOutputManager:
    """Compiles, waits on and steps the grammars of one engine's requests."""

    def __init__(self, tokenizer: Tokenizer, vocab_size: int, device: torch.device, *, timeout_s: float,
                 jump_forward: bool, max_rows: int, threads: int | None = None) -> None:
        """Serve requests of ``tokenizer``'s model (logits ``vocab_size`` wide, on ``device``); compiles may
        take ``timeout_s``; ``jump_forward`` appends forced tokens; up to ``max_rows`` constrained rows per
        step are expected (more grow the buffer); ``threads`` fill the bitmask."""
        self._tokenizer = tokenizer
        self.vocab_size = vocab_size
        self.device = device
        self.timeout_s = timeout_s
        self.jump_forward = jump_forward
        self._max_rows = max_rows
        self._threads = threads
        self._compiler: GrammarCompiler | None = None
        self._filler: BitmaskFiller | None = None
        self._pending: dict[int, _Pending] = {}  # core id -> request waiting for its grammar
        self._overlap: ThreadPoolExecutor | None = None  # fills the bitmask while a GPU runs the forward

    @property
    def compiler(self) -> GrammarCompiler:
        """The process-wide compiler of this model's tokenizer (shared with the input processor)."""
        if self._compiler is None:
            self._compiler = compiler_for(self._tokenizer, self.vocab_size)
        return self._compiler

    # ----- waiting for grammars -----------------------------------------------------------------
    def submit(self, req: EngineRequest) -> None:
        """Start compiling ``req``'s grammar (or find it cached); the request waits until ``ready`` hands it back."""
        params = req.params.structured_outputs
        if params is None:
            raise ValueError(f"request {req.request_id!r} has no structured_outputs")
        self._pending[req.core_id] = _Pending(req, self.compiler.compile(params), time.monotonic() + self.timeout_s)

    @property
    def num_waiting(self) -> int:
        """Requests still waiting for their grammar."""
        return len(self._pending)

    def is_waiting(self, req: EngineRequest) -> bool:
        """True while ``req`` waits for its grammar (it is not in the scheduler yet)."""
        return req.core_id in self._pending

    def discard(self, req: EngineRequest) -> None:
        """Forget a waiting request (aborted); its compile finishes anyway and stays cached."""
        self._pending.pop(req.core_id, None)

    def ready(self, now: float | None = None) -> tuple[list[EngineRequest], list[tuple[EngineRequest, str]]]:
        """Requests whose grammar is ready (their matcher set, in arrival order) and requests that failed,
        with the error: the compile's own ``ValueError`` or a timeout."""
        if not self._pending:
            return [], []
        now = time.monotonic() if now is None else now
        ready: list[EngineRequest] = []
        failed: list[tuple[EngineRequest, str]] = []
        for core_id, pending in list(self._pending.items()):
            req, future = pending.request, pending.future
            if future.done():
                del self._pending[core_id]
                params = req.params.structured_outputs
                kind = params.kind if params is not None else "json"
                try:
                    req.grammar = GrammarMatcher(future.result().new_matcher(), kind)
                except Exception as exc:  # a ValueError naming the field, or a library fault
                    message = str(exc) if isinstance(exc, ValueError) else f"structured_outputs.{kind}: {exc!r}"
                    failed.append((req, message))
                    continue
                ready.append(req)
            elif now > pending.deadline:
                del self._pending[core_id]
                kind = req.params.structured_outputs.kind if req.params.structured_outputs else "json"
                failed.append((req, f"structured_outputs.{kind}: the grammar did not compile within "
                                    f"{self.timeout_s:g} s (EngineConfig.structured_outputs_timeout)"))
        return ready, failed

    def wait(self, timeout: float) -> None:
        """Block up to ``timeout`` seconds until some waiting grammar is ready (the engine has nothing else
        to do), never past the nearest compile deadline."""
        if not self._pending:
            return
        nearest = min(p.deadline for p in self._pending.values()) - time.monotonic()
        wait([p.future for p in self._pending.values()], timeout=max(0.0, min(timeout, nearest)),
             return_when=FIRST_COMPLETED)

    # ----- stepping the grammars ----------------------------------------------------------------
    def bitmask(self, sampling: Sequence[EngineRequest]) -> TokenBitmask | None:
        """The token bitmask of this step's constrained sampling rows (None when no row is constrained)."""
        rows = [i for i, req in enumerate(sampling) if req.grammar is not None]
        if not rows:
            return None
        if self._filler is None:
            self._filler = BitmaskFiller(self.compiler.mask_words, self._max_rows, self.device, self._threads)
        matchers = [sampling[i].grammar for i in rows]
        return self._filler.fill([m for m in matchers if m is not None], rows)

    def prepare_bitmask(self, sampling: Sequence[EngineRequest]) -> Callable[[], TokenBitmask | None]:
        """Start this step's bitmask; the returned function gives it. On a GPU it is filled on a worker thread
        while the forward runs (the matchers are not touched meanwhile); on the CPU, where the forward has
        every core, it is filled now (a second busy thread would stall the forward's OpenMP barriers)."""
        if not any(req.grammar is not None for req in sampling):
            return lambda: None
        if self.device.type != "cuda":
            bitmask = self.bitmask(sampling)
            return lambda: bitmask
        if self._overlap is None:
            self._overlap = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bastion-bitmask")
        return self._overlap.submit(self.bitmask, list(sampling)).result

    def forced_tokens(self, req: EngineRequest) -> list[int]:
        """The tokens ``req``'s grammar forces next, to append without a model step; [] when jump-forward
        is off, the request asks for logprobs (the model must score every token) or nothing is forced."""
        if not self.jump_forward or req.grammar is None or req.params.logprobs is not None:
            return []
        return req.grammar.forced_tokens()
