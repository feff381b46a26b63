"""``GrammarCompiler``: constraints checked and compiled once per (kind, spec, tokenizer), off the caller's
thread.

- ``check(params)`` runs on the caller's thread (the input processor) and raises ``ValueError`` naming
  the field for a constraint llguidance rejects; its verdicts are cached, so a schema seen before costs
  a dict lookup.
- ``compile(params)`` returns a ``Future`` of a ``CompiledGrammar`` built on a small thread pool;
  concurrent and later requests for the same constraint share it (an LRU of ``cache_size`` entries).
  A request then gets its own matcher from it (``CompiledGrammar.new_matcher``, a ~10 us copy).

``compiler_for(tokenizer, vocab_size)`` gives the process-wide compiler of a tokenizer, keyed by its
fingerprint (tokenizer JSON, eos ids, vocab size), so every engine of one model shares one cache.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bastion.sampling.grammar import library
from bastion.sampling.structured_params import StructuredOutputsParams

if TYPE_CHECKING:
    from bastion.model import Tokenizer

CacheKey = tuple[str, str]


@dataclass(frozen=True)
class CompiledGrammar:
    """A constraint compiled for one tokenizer: a template matcher that is never advanced."""

    key: CacheKey
    template: Any  # llguidance.LLMatcher at the grammar's start

    def new_matcher(self) -> Any:
        """A matcher of its own for one request, at the start of the grammar."""
        return self.template.deep_copy()


class GrammarCompiler:
    """Checks and compiles constraints for one tokenizer; thread-safe."""

    def __init__(self, tokenizer: Tokenizer, vocab_size: int, *, max_workers: int = 2, cache_size: int = 512) -> None:
        """Compile for ``tokenizer`` with masks ``vocab_size`` wide, on ``max_workers`` threads, remembering
        the last ``cache_size`` constraints."""
        self._tokenizer = tokenizer
        self.vocab_size = vocab_size
        self.cache_size = cache_size
        self._lock = threading.Lock()
        self._lltokenizer: Any = None
        self._verdicts: OrderedDict[CacheKey, str | None] = OrderedDict()  # key -> error message or None
        self._compiled: OrderedDict[CacheKey, Future[CompiledGrammar]] = OrderedDict()
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="bastion-grammar")

    @property
    def lltokenizer(self) -> Any:
        """llguidance's tokenizer, built on first use (~0.2 s for SmolLM2's vocabulary)."""
        with self._lock:
            if self._lltokenizer is None:
                self._lltokenizer = library.make_tokenizer(self._tokenizer, self.vocab_size)
            return self._lltokenizer

    @property
    def mask_words(self) -> int:
        """int32 words per bitmask row (one bit per token of the llguidance vocabulary)."""
        return (int(self.lltokenizer.vocab_size) + 31) // 32

    def check(self, params: StructuredOutputsParams) -> None:
        """Raise ValueError naming ``structured_outputs.<kind>`` when the constraint cannot be compiled."""
        key = (params.kind, params.spec)
        with self._lock:
            known = key in self._verdicts
            verdict = self._verdicts.get(key)
            if known:
                self._verdicts.move_to_end(key)
        if not known:
            try:
                library.check_grammar(params, library.grammar_text(params), self.lltokenizer)
                verdict = None
            except ValueError as exc:
                verdict = str(exc)
            with self._lock:
                self._verdicts[key] = verdict
                while len(self._verdicts) > self.cache_size:
                    self._verdicts.popitem(last=False)
        if verdict is not None:
            raise ValueError(verdict)

    def compile(self, params: StructuredOutputsParams) -> Future[CompiledGrammar]:
        """The compiled constraint, built on the pool unless a request already asked for it.

        The future raises ValueError naming the field when llguidance rejects the grammar.
        """
        key = (params.kind, params.spec)
        with self._lock:
            future = self._compiled.get(key)
            if future is not None:
                self._compiled.move_to_end(key)
                return future
            future = self._pool.submit(self._build, key, params)
            self._compiled[key] = future
            while len(self._compiled) > self.cache_size:
                oldest = next(iter(self._compiled))
                if not self._compiled[oldest].done():
                    break  # still compiling for someone: evict once done
                del self._compiled[oldest]
        return future

    def cached(self, params: StructuredOutputsParams) -> bool:
        """True when the constraint's compile finished (successfully or not) and is still cached."""
        with self._lock:
            future = self._compiled.get((params.kind, params.spec))
        return future is not None and future.done()

    def _build(self, key: CacheKey, params: StructuredOutputsParams) -> CompiledGrammar:
        grammar = library.grammar_text(params)
        return CompiledGrammar(key, library.new_matcher(grammar, self.lltokenizer, params))

    def clear(self) -> None:
        """Forget every cached verdict and finished compile (a benchmark measuring cold compiles uses this)."""
        with self._lock:
            self._verdicts.clear()
            for key in [k for k, f in self._compiled.items() if f.done()]:
                del self._compiled[key]


_compilers: dict[str, GrammarCompiler] = {}
_fingerprints: weakref.WeakKeyDictionary[Any, dict[int, str]] = weakref.WeakKeyDictionary()
_registry_lock = threading.Lock()


def compiler_for(tokenizer: Tokenizer, vocab_size: int) -> GrammarCompiler:
    """The process-wide ``GrammarCompiler`` of ``tokenizer`` with masks ``vocab_size`` wide."""
    with _registry_lock:
        by_size = _fingerprints.setdefault(tokenizer, {})
        fingerprint = by_size.get(vocab_size)
        if fingerprint is None:
            fingerprint = by_size[vocab_size] = library.tokenizer_fingerprint(tokenizer, vocab_size)
        compiler = _compilers.get(fingerprint)
        if compiler is None:
            compiler = _compilers[fingerprint] = GrammarCompiler(tokenizer, vocab_size)
        return compiler
