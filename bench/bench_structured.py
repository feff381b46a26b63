"""Structured outputs on the embedded SmolLM2: what constraining costs, what jump-forward saves, validity.

In one process, on one engine, N concurrent chat requests (default 64) each asking for one of the JSON
schemas of ``bench/structured_schemas.py`` (nested objects, arrays, enums, bounded numbers, string
patterns), greedy:

1. constrained, jump-forward off: every token is a model step under the grammar's mask;
2. the same prompts unconstrained, each request held (``ignore_eos``) to exactly the token count it got
   in (1): the same work without the grammar, so ``throughput_loss`` = 1 - (1) / (2) is the price of
   masking alone (target <= 10 %);
3. constrained with jump-forward on (the engine's default): forced tokens are appended without a step
   each; ``jump_forward`` reports how many tokens were forced and the wall-time saving against (1).

Rounds alternate the three runs; figures are medians. Also: every schema's cold compile time (the
input processor's check, then the engine's compile, on a fresh cache) and validity at temperature 0
(run 3) and temperature 1 (one more constrained run, seeded): the share of outputs that finished with
"stop" and, of those, the share that parse and validate against their schema (must be 100 %).

    python -m bench.bench_structured [--json] [--requests 64] [--max-tokens 160] [--rounds 2] [--quick]
"""

from __future__ import annotations

import json
import statistics
import time
from typing import Any

import jsonschema

from bench.common import bench_parser, emit, use_threads
from bench.structured_schemas import PROMPTS, SCHEMAS


def _requests(n: int) -> list[tuple[str, dict[str, Any]]]:
    names = list(SCHEMAS)
    return [(names[i % len(names)], {"role": "user", "content": PROMPTS[names[i % len(names)]] + f" (#{i})"})
            for i in range(n)]


def _run(llm: Any, requests: list[tuple[str, dict[str, Any]]], params: list[Any]) -> tuple[list[Any], float]:
    start = time.perf_counter()
    outs = llm.chat([[message] for _, message in requests], params, use_tqdm=False)
    return outs, time.perf_counter() - start


def _constrained(requests: list[tuple[str, dict[str, Any]]], max_tokens: int, temperature: float = 0.0) -> list[Any]:
    from bastion import SamplingParams, StructuredOutputsParams

    return [SamplingParams(max_tokens=max_tokens, temperature=temperature, seed=i,
                           structured_outputs=StructuredOutputsParams(json=SCHEMAS[name]))
            for i, (name, _) in enumerate(requests)]


def validity(outs: list[Any], requests: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """Share of outputs that ended with "stop", and of those the share that parse and validate."""
    stopped = [(o, name) for o, (name, _) in zip(outs, requests) if o.finish_reason == "stop"]
    valid = 0
    for out, name in stopped:
        try:
            jsonschema.validate(json.loads(out.text), SCHEMAS[name])
            valid += 1
        except (ValueError, jsonschema.ValidationError):
            pass
    return {"finished_stop": f"{len(stopped)}/{len(outs)}", "valid_of_stopped": f"{valid}/{len(stopped)}",
            "valid_rate": round(valid / len(stopped), 4) if stopped else None,
            "finish_reasons": sorted({o.finish_reason for o in outs})}


def compile_times(llm: Any) -> dict[str, Any]:
    """llguidance's tokenizer setup (once per model), then per schema the cold check (input processor) and
    compile (worker pool) times and a cached compile, ms."""
    from bastion import StructuredOutputsParams

    compiler = llm.engine.structured.compiler
    start = time.perf_counter()
    compiler.lltokenizer  # noqa: B018  # built on first use
    out: dict[str, Any] = {"tokenizer_setup_ms": round((time.perf_counter() - start) * 1e3, 1)}
    compiler.clear()
    for name, schema in SCHEMAS.items():
        params = StructuredOutputsParams(json=schema)
        start = time.perf_counter()
        compiler.check(params)
        checked = time.perf_counter()
        compiler.compile(params).result(timeout=60)
        compiled = time.perf_counter()
        compiler.compile(params).result(timeout=60)
        out[name] = {"check_ms": round((checked - start) * 1e3, 2), "compile_ms": round((compiled - checked) * 1e3, 2),
                     "cached_ms": round((time.perf_counter() - compiled) * 1e3, 3)}
    return out


def main() -> None:
    parser = bench_parser(__doc__ or "", threads=True)
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=160)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="8 requests, 64 tokens, 1 round (a smoke run)")
    args = parser.parse_args()
    if args.quick:
        args.requests, args.max_tokens, args.rounds = 8, 64, 1
    threads = use_threads(args.threads)
    import bastion
    from bastion import SamplingParams

    llm = bastion.LLM(max_num_seqs=max(64, args.requests), num_kv_blocks=2048, num_threads=threads)
    requests = _requests(args.requests)
    compiled = compile_times(llm)
    llm.chat([[{"role": "user", "content": "Hi"}]] * 4, SamplingParams(max_tokens=4), use_tqdm=False)  # warm up
    engine = llm.engine.structured
    masked_s: list[float] = []
    free_s: list[float] = []
    jumped_s: list[float] = []
    for _ in range(args.rounds):
        engine.jump_forward = False
        masked, wall = _run(llm, requests, _constrained(requests, args.max_tokens))
        masked_s.append(wall)
        lengths = [len(o.token_ids) for o in masked]
        free_params = [SamplingParams(max_tokens=n, temperature=0.0, ignore_eos=True) for n in lengths]
        free, wall = _run(llm, requests, free_params)
        free_s.append(wall)
        assert [len(o.token_ids) for o in free] == lengths
        engine.jump_forward = True
        jumped, wall = _run(llm, requests, _constrained(requests, args.max_tokens))
        jumped_s.append(wall)
    tokens = sum(lengths)
    jumped_tokens = sum(len(o.token_ids) for o in jumped)
    forced = sum(o.metrics.num_forced_tokens for o in jumped)
    hot, _ = _run(llm, requests, _constrained(requests, args.max_tokens, temperature=1.0))
    masked_tok_s = tokens / statistics.median(masked_s)
    free_tok_s = tokens / statistics.median(free_s)
    result = {
        "requests": args.requests, "max_tokens": args.max_tokens, "rounds": args.rounds, "threads": threads,
        "library": "llguidance", "compile": compiled,
        "constrained_tok_s": round(masked_tok_s, 1), "unconstrained_tok_s": round(free_tok_s, 1),
        "output_tokens": tokens, "throughput_loss": round(1.0 - masked_tok_s / free_tok_s, 4),
        "jump_forward": {
            "tok_s": round(jumped_tokens / statistics.median(jumped_s), 1), "output_tokens": jumped_tokens,
            "forced_tokens": forced, "forced_share": round(forced / jumped_tokens, 4) if jumped_tokens else 0.0,
            "wall_s": round(statistics.median(jumped_s), 3), "wall_s_without": round(statistics.median(masked_s), 3),
            "wall_saving": round(1.0 - statistics.median(jumped_s) / statistics.median(masked_s), 4),
        },
        "validity_temperature_0": validity(jumped, requests),
        "validity_temperature_1": validity(hot, requests),
        "wall_s": {"constrained": [round(w, 3) for w in masked_s], "unconstrained": [round(w, 3) for w in free_s],
                   "jump_forward": [round(w, 3) for w in jumped_s]},
    }
    emit(result, args.json)


if __name__ == "__main__":
    main()
