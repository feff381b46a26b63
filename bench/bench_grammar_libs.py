"""xgrammar against llguidance on the CPU with SmolLM2's real tokenizer: the measurements that chose
bastion's structured-output library (docs/STRUCTURED_OUTPUTS.md).

For each library, with the embedded SmolLM2-135M tokenizer (vocab 49152):
- tokenizer setup time (once per engine);
- compile time of every schema of ``bench/structured_schemas.py`` plus a regex, a choice and a Lark
  grammar, cold (a fresh compiler, no cache);
- per-step token-bitmask fill time, driving the matchers along valid instances token by token: one
  matcher (batch 1) and 64 matchers filled in one batched call (batch 64), with every core;
- correctness: every token of a valid instance must be allowed (no false rejections), and random walks
  (a uniformly random allowed token each step, the stop token taken as soon as it is allowed) must end in
  text that validates against the schema; special tokens (``<|im_start|>``) must never be allowed in text.

    python -m bench.bench_grammar_libs [--json] [--walks 20] [--steps 200]
"""

from __future__ import annotations

import json
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

import jsonschema
import numpy as np

from bench.common import bench_parser, emit
from bench.structured_schemas import CHOICE, INSTANCES, LARK, REGEX, SCHEMAS

BATCH = 64
SEPARATORS = (", ", ": ")


def _vocab_strings(tokenizer: Any) -> list[str]:
    """The encoded vocabulary by id, special (added) tokens as "" so no grammar can emit them as text."""
    backend = tokenizer.backend
    vocab = [""] * tokenizer.vocab_size
    for token, idx in backend.get_vocab(with_added_tokens=True).items():
        vocab[idx] = token
    for idx, added in backend.get_added_tokens_decoder().items():
        if added.special:
            vocab[idx] = ""
    return vocab


class XGrammar:
    """xgrammar 0.2.x: TokenizerInfo, GrammarCompiler, GrammarMatcher, BatchGrammarMatcher."""

    name = "xgrammar"

    def __init__(self, tokenizer: Any) -> None:
        import xgrammar as xgr

        self.xgr = xgr
        start = time.perf_counter()
        meta = xgr.TokenizerInfo._detect_metadata_from_hf(tokenizer.backend.to_str())
        self.info = xgr.TokenizerInfo(_vocab_strings(tokenizer), meta["vocab_type"], vocab_size=tokenizer.vocab_size,
                                      stop_token_ids=list(tokenizer.eos_token_ids),
                                      add_prefix_space=meta["add_prefix_space"])
        self.setup_s = time.perf_counter() - start
        self.batch = xgr.BatchGrammarMatcher()

    def compile(self, kind: str, spec: Any) -> Any:
        """A fresh compiler each call: cold compile time, no cache."""
        compiler = self.xgr.GrammarCompiler(self.info, cache_enabled=False)
        if kind == "json":
            return compiler.compile_json_schema(json.dumps(spec), any_whitespace=False, separators=SEPARATORS)
        if kind == "regex":
            return compiler.compile_regex(spec)
        if kind == "choice":
            return compiler.compile_lark("start: " + " | ".join(json.dumps(c) for c in spec))
        return compiler.compile_lark(spec)

    def matcher(self, compiled: Any) -> Any:
        return self.xgr.GrammarMatcher(compiled)

    def fill(self, matcher: Any, bitmask: np.ndarray, row: int) -> None:
        import torch

        matcher.fill_next_token_bitmask(torch.from_numpy(bitmask), row)

    def fill_batch(self, matchers: list[Any], bitmask: np.ndarray) -> None:
        import torch

        self.batch.batch_fill_next_token_bitmask(matchers, torch.from_numpy(bitmask))

    def accept(self, matcher: Any, token: int) -> bool:
        return bool(matcher.accept_token(token))

    def terminated(self, matcher: Any) -> bool:
        return bool(matcher.is_terminated())

    def reset(self, matcher: Any) -> None:
        matcher.reset()


class LLGuidance:
    """llguidance 1.x: LLTokenizer from tokenizer.json, LLMatcher, LLExecutor."""

    name = "llguidance"

    def __init__(self, tokenizer: Any) -> None:
        import llguidance as llg

        self.llg = llg
        start = time.perf_counter()
        self.tok = llg.LLTokenizer(tokenizer.backend.to_str(), n_vocab=tokenizer.vocab_size,
                                   eos_token=list(tokenizer.eos_token_ids))
        self.setup_s = time.perf_counter() - start
        self.executor = llg.LLExecutor()
        self.options = {"item_separator": SEPARATORS[0], "key_separator": SEPARATORS[1], "whitespace_flexible": False}

    def compile(self, kind: str, spec: Any) -> Any:
        """The grammar text, validated against the tokenizer (llguidance builds its lexer lazily: the
        matcher's construction and first masks carry the rest of the cost, timed with it)."""
        llg = self.llg
        if kind == "json":
            grammar = llg.LLMatcher.grammar_from_json_schema(json.dumps(spec), overrides=self.options)
        elif kind == "regex":
            grammar = llg.LLMatcher.grammar_from_regex(spec)
        elif kind == "choice":
            grammar = llg.grammar_from("choice", json.dumps(spec))
        else:
            grammar = llg.LLMatcher.grammar_from_lark(spec)
        is_error, messages = llg.LLMatcher.validate_grammar_with_warnings(grammar, self.tok)
        if is_error:
            raise ValueError(messages[0])
        # construct one matcher so the compile figure includes the parser/lexer setup
        m = llg.LLMatcher(self.tok, grammar)
        if m.is_error():
            raise ValueError(m.get_error())
        return grammar

    def matcher(self, compiled: Any) -> Any:
        return self.llg.LLMatcher(self.tok, compiled)

    def fill(self, matcher: Any, bitmask: np.ndarray, row: int) -> None:
        v = bitmask[row]
        matcher.unsafe_compute_mask_ptr(v.ctypes.data, v.nbytes)

    def fill_batch(self, matchers: list[Any], bitmask: np.ndarray) -> None:
        self.executor.unsafe_compute_mask_ptr([(m, i) for i, m in enumerate(matchers)], bitmask.ctypes.data,
                                              bitmask.shape[1] * 4, bitmask.shape[0])

    def accept(self, matcher: Any, token: int) -> bool:
        return bool(matcher.consume_token(token))

    def terminated(self, matcher: Any) -> bool:
        return bool(matcher.is_stopped())

    def reset(self, matcher: Any) -> None:
        matcher.reset()


def allowed(bitmask: np.ndarray, row: int, vocab: int) -> np.ndarray:
    """Token ids row ``row`` of an int32 bitmask allows."""
    bits = np.unpackbits(bitmask[row].view(np.uint8), bitorder="little")[:vocab]
    return np.flatnonzero(bits)


def _specs() -> dict[str, tuple[str, Any]]:
    specs: dict[str, tuple[str, Any]] = {f"json:{name}": ("json", schema) for name, schema in SCHEMAS.items()}
    specs |= {"json_object": ("json", {"type": "object"}), "regex:phone": ("regex", REGEX),
              "choice:sentiment": ("choice", CHOICE), "lark:arith": ("lark", LARK)}
    return specs


def measure_compile(lib: Any, rounds: int = 3) -> dict[str, float]:
    """Median cold compile time (ms) of every spec."""
    out = {}
    for name, (kind, spec) in _specs().items():
        times = []
        for _ in range(rounds):
            start = time.perf_counter()
            lib.compile(kind, spec)
            times.append(time.perf_counter() - start)
        out[name] = round(statistics.median(times) * 1e3, 2)
    return out


def instance_tokens(tokenizer: Any) -> dict[str, list[int]]:
    """Each schema's valid instance, serialised as the grammar wants it, as token ids."""
    return {name: tokenizer.encode(json.dumps(INSTANCES[name], separators=SEPARATORS), add_special_tokens=False)
            for name in SCHEMAS}


def measure_masks(lib: Any, tokenizer: Any, compiled: dict[str, Any], steps: int) -> dict[str, Any]:
    """Per-step fill time at batch 1 and batch 64 along valid instances; false rejections counted."""
    vocab = tokenizer.vocab_size
    words = (vocab + 31) // 32
    tokens = instance_tokens(tokenizer)
    names = list(SCHEMAS)
    rejections = 0

    def drive(batch: int, fill: Callable[[list[Any], np.ndarray], None]) -> list[float]:
        nonlocal rejections
        matchers = [lib.matcher(compiled[names[i % len(names)]]) for i in range(batch)]
        position = [0] * batch
        bitmask = np.zeros((batch, words), dtype=np.int32)
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            fill(matchers, bitmask)
            times.append(time.perf_counter() - start)
            for i, m in enumerate(matchers):
                ids = tokens[names[i % len(names)]]
                token = ids[position[i]]
                word, bit = divmod(token, 32)
                if not (int(bitmask[i, word]) >> bit) & 1:
                    rejections += 1
                lib.accept(m, token)
                position[i] += 1
                if position[i] == len(ids):
                    lib.reset(m)
                    position[i] = 0
        return times

    single = drive(1, lambda ms, bm: lib.fill(ms[0], bm, 0))
    batched = drive(BATCH, lib.fill_batch)
    return {"mask_b1_us_p50": round(statistics.median(single) * 1e6, 1),
            "mask_b1_us_p99": round(float(np.percentile(single, 99)) * 1e6, 1),
            f"mask_b{BATCH}_ms_p50": round(statistics.median(batched) * 1e3, 3),
            f"mask_b{BATCH}_ms_p99": round(float(np.percentile(batched, 99)) * 1e3, 3),
            "false_rejections": rejections}


def random_walks(lib: Any, tokenizer: Any, compiled: dict[str, Any], walks: int, max_steps: int,
                 seed: int = 0) -> dict[str, Any]:
    """Random allowed tokens until the stop token: how many outputs parse and validate."""
    rng = random.Random(seed)
    vocab = tokenizer.vocab_size
    eos = set(tokenizer.eos_token_ids)
    special = {i for i, t in tokenizer.backend.get_added_tokens_decoder().items() if t.special} - eos
    bitmask = np.zeros((1, (vocab + 31) // 32), dtype=np.int32)
    valid = invalid = unfinished = special_allowed = 0
    failures: list[str] = []
    for name, schema in SCHEMAS.items():
        for _ in range(walks):
            m = lib.matcher(compiled[name])
            out: list[int] = []
            done = False
            for _ in range(max_steps):
                lib.fill(m, bitmask, 0)
                ids = allowed(bitmask, 0, vocab)
                if special & set(ids.tolist()):
                    special_allowed += 1
                stops = [t for t in ids.tolist() if t in eos]
                if stops:
                    done = True
                    break
                token = int(ids[rng.randrange(len(ids))])
                lib.accept(m, token)
                out.append(token)
            if not done:
                unfinished += 1
                continue
            text = tokenizer.decode(out)
            try:
                jsonschema.validate(json.loads(text), schema)
                valid += 1
            except (ValueError, jsonschema.ValidationError) as exc:
                invalid += 1
                if len(failures) < 3:
                    failures.append(f"{name}: {text[:120]!r}: {str(exc)[:120]}")
    return {"walks_valid": valid, "walks_invalid": invalid, "walks_unfinished": unfinished,
            "special_token_allowed_steps": special_allowed, "failures": failures}


def main() -> None:
    parser = bench_parser(__doc__ or "")
    parser.add_argument("--walks", type=int, default=20, help="random walks per schema")
    parser.add_argument("--steps", type=int, default=200, help="mask steps timed per batch size; walk length cap")
    args = parser.parse_args()
    import bastion

    tokenizer = bastion.LLM(num_kv_blocks=16).tokenizer
    result: dict[str, Any] = {"vocab_size": tokenizer.vocab_size, "batch": BATCH}
    for cls in (XGrammar, LLGuidance):
        lib = cls(tokenizer)
        compiled = {name: lib.compile("json", schema) for name, schema in SCHEMAS.items()}
        result[lib.name] = {"tokenizer_setup_ms": round(lib.setup_s * 1e3, 1), "compile_ms": measure_compile(lib),
                            **measure_masks(lib, tokenizer, compiled, args.steps),
                            **random_walks(lib, tokenizer, compiled, args.walks, args.steps)}
    emit(result, args.json)


if __name__ == "__main__":
    main()
