"""Audit trail cost: the Gateway with a signed, encrypted trail vs the plain hash chain, same run.

Two Gateways over one engine in one process, identical but for the audit log: "plain" is
``AuditLog(path)`` (hash chain), "secured" is ``AuditLog(path, signing_key=..., encryption=...)``
(Merkle tree, Ed25519 tree heads every ``--head-every`` records and at close, AES-GCM sealing of
user, prompt and output under per-subject keys). Both keep everything else of bench_gateway's
"all checks on" (rate limiter, default guardrails, hooks, ``fsync="always"``). Rounds alternate
plain/secured, then secured/plain, so drift in the machine's load hits both; the figures are the
throughput loss of the medians (target <= 5 %), the median of the rounds' paired losses, and the
paired loss in the process's CPU time per token (engine included; on a shared machine the steadiest).
Afterwards both trails are verified (the secured one with the public key, every head); the
writer's own cost per record is measured without the engine (``--records`` records of bench size,
``fsync="never"``) with the time to verify and prove; and the Gateway's CPU time per token with a
zero-cost backend, plain vs secured (CPU time: immune to other load on the machine).

    python -m bench.bench_audit [--streams 64] [--max-tokens 32] [--rounds 3] [--threads N] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.bench_gateway import PROMPTS, InstantBackend, _gateway_round
from bench.common import bench_parser, emit, use_threads


def _secured_kwargs(head_every: int, signing: Any, master: Any) -> dict[str, Any]:
    from bastion.audit import Encryption

    return {"signing_key": signing, "encryption": Encryption(master), "head_every": head_every}


def _gateway(llm: Any, audit: Any) -> Any:
    from bastion.gateway import Gateway
    from bastion.resilience.guardrails import default_pipeline
    from bastion.resilience.ratelimit import RateLimit, RateLimiter

    limiter = RateLimiter([RateLimit(requests_per_minute=1e6, tokens_per_minute=1e9, scope="user")])
    return Gateway(llm, audit=audit, guardrails=default_pipeline(), rate_limiter=limiter,
                   hooks={"finished": lambda event: None})


def _bench_record(i: int) -> Any:
    """A record the size of a served bench request (prompt, 32-token answer, one attempt)."""
    from bastion.audit import AuditRecord, BackendAttempt, ContentPolicy

    policy = ContentPolicy()
    return AuditRecord(request_id=f"r{i}", user=f"user-{i % 8}", tenant="bench", outcome="served",
                       metadata={"end_user": f"user-{i % 8}"}, backend="0",
                       prompt=policy.capture(PROMPTS[i % len(PROMPTS)].format(i=i)),
                       output=policy.capture(" word" * 32), prompt_tokens=12, output_tokens=32,
                       attempts=[BackendAttempt(backend="0", outcome="ok", duration_s=0.5)],
                       sampling={"max_tokens": 32, "temperature": 0.0})


def writer_cost(tmp: Path, n: int, head_every: int, signing: Any, master: Any) -> dict[str, float]:
    """Microseconds of wall and CPU time per record for the writer, plain vs secured; verify/prove times."""
    from bastion.audit import AuditLog, verify
    from bastion.audit.proofs import inclusion_proof

    records = [_bench_record(i) for i in range(n)]
    out: dict[str, float] = {}
    for name, kwargs in (("plain", {}), ("secured", _secured_kwargs(head_every, signing, master))):
        path = tmp / f"writer_{name}.jsonl"
        log = AuditLog(path, fsync="never", **kwargs)
        wall, cpu = time.perf_counter(), time.process_time()
        futures = [log.append(r) for r in records]
        log.flush()
        for f in futures:
            f.result()
        out[f"{name}_writer_us_per_record"] = round(1e6 * (time.perf_counter() - wall) / n, 1)
        out[f"{name}_writer_cpu_us_per_record"] = round(1e6 * (time.process_time() - cpu) / n, 1)
        log.close()
        start = time.perf_counter()
        result = verify(path, public_key=signing.verify_key if name == "secured" else None)
        out[f"{name}_verify_s"] = round(time.perf_counter() - start, 3)
        if not result.ok:
            raise RuntimeError(f"{name} writer trail does not verify: {result}")
    start = time.perf_counter()
    inclusion_proof(tmp / "writer_secured.jsonl", n // 2)
    out["prove_s"] = round(time.perf_counter() - start, 3)
    out["writer_records"] = n
    return out


async def gateway_cpu_cost(tmp: Path, args: argparse.Namespace, signing: Any, master: Any) -> dict[str, float]:
    """CPU microseconds (all threads) per streamed token through the Gateway with a zero-cost backend,
    plain vs secured, median of the rounds: CPU time, so other load on the machine does not inflate it."""
    from bastion.audit import AuditLog

    prompts = [PROMPTS[i % len(PROMPTS)].format(i=i) for i in range(args.streams)]
    kinds = {"plain": {}, "secured": _secured_kwargs(args.head_every, signing, master)}
    logs = {name: AuditLog(tmp / f"cpu_{name}.jsonl", fsync="always", **kw) for name, kw in kinds.items()}
    gateways = {name: _gateway(InstantBackend(), log) for name, log in logs.items()}
    costs: dict[str, list[float]] = {"plain": [], "secured": []}
    for gateway in gateways.values():
        await _gateway_round(gateway, prompts, 4)  # warm-up
    for r in range(max(3, args.rounds)):
        for name in (("plain", "secured") if r % 2 == 0 else ("secured", "plain")):
            cpu = time.process_time()
            tokens, _ = await _gateway_round(gateways[name], prompts, args.max_tokens)
            logs[name].flush()
            costs[name].append(1e6 * (time.process_time() - cpu) / tokens)
    for name, gateway in gateways.items():
        await gateway.aclose()
        logs[name].close()
    plain, secured = statistics.median(costs["plain"]), statistics.median(costs["secured"])
    return {"plain_gateway_cpu_us_per_token": round(plain, 2), "secured_gateway_cpu_us_per_token": round(secured, 2),
            "audit_cpu_us_per_token_added": round(secured - plain, 2)}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark; returns the figures printed by ``main``."""
    from bastion import AsyncLLM
    from bastion.audit import AuditLog, MasterKey, SigningKey, verify

    signing, master = SigningKey.generate(), MasterKey.generate()
    llm = AsyncLLM(args.model, max_model_len=256, num_kv_blocks=args.streams * 8, max_num_seqs=args.streams,
                   num_threads=use_threads(args.threads))
    prompts = [PROMPTS[i % len(PROMPTS)].format(i=i) for i in range(args.streams)]
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        logs = {"plain": AuditLog(tmp / "plain.jsonl", fsync="always"),
                "secured": AuditLog(tmp / "secured.jsonl", fsync="always",
                                    **_secured_kwargs(args.head_every, signing, master))}
        gateways = {name: _gateway(llm, log) for name, log in logs.items()}
        for gateway in gateways.values():
            await _gateway_round(gateway, prompts[:4], 4)  # first-call costs out of the figures
        rates: dict[str, list[float]] = {"plain": [], "secured": []}
        cpu_per_token: dict[str, list[float]] = {"plain": [], "secured": []}
        tokens_seen: dict[str, int] = {}
        for r in range(args.rounds):
            for name in (("plain", "secured") if r % 2 == 0 else ("secured", "plain")):
                cpu = time.process_time()
                tokens, secs = await _gateway_round(gateways[name], prompts, args.max_tokens)
                logs[name].flush()
                cpu_per_token[name].append((time.process_time() - cpu) / tokens)
                tokens_seen.setdefault(name, tokens)
                if tokens != tokens_seen[name]:
                    raise RuntimeError(f"{name}: token counts differ between rounds ({tokens} vs {tokens_seen[name]})")
                rates[name].append(tokens / secs)
        if tokens_seen["plain"] != tokens_seen["secured"]:
            raise RuntimeError(f"token counts differ: plain {tokens_seen['plain']}, secured {tokens_seen['secured']}")
        for gateway in gateways.values():
            await gateway.aclose()
        for log in logs.values():
            log.close()
        plain = verify(tmp / "plain.jsonl")
        secured = verify(tmp / "secured.jsonl", public_key=signing.verify_key)
        await llm.close()  # the idle engine stays out of the writer figures
        writer = writer_cost(tmp, args.records, args.head_every, signing, master)
        writer |= await gateway_cpu_cost(tmp, args, signing, master)
        heads_bytes = (tmp / "secured.jsonl.heads").stat().st_size
        trail_bytes = {name: (tmp / f"{name}.jsonl").stat().st_size for name in logs}
    plain_tps, secured_tps = statistics.median(rates["plain"]), statistics.median(rates["secured"])
    return {
        "streams": args.streams, "max_tokens": args.max_tokens, "rounds": args.rounds, "head_every": args.head_every,
        "plain_tokens_per_s": round(plain_tps, 1), "secured_tokens_per_s": round(secured_tps, 1),
        "throughput_loss_pct": round(100.0 * (plain_tps - secured_tps) / plain_tps, 2),
        # each round's pair ran back to back: the median of their losses is the least sensitive to drift
        "paired_loss_pct": round(statistics.median(100.0 * (p - s) / p for p, s in zip(rates["plain"],
                                                                                        rates["secured"],
                                                                                        strict=True)), 2),
        # the process's CPU time per token (engine included): far less sensitive to other load than wall time
        "cpu_loss_pct": round(statistics.median(100.0 * (s - p) / p for p, s in zip(cpu_per_token["plain"],
                                                                                     cpu_per_token["secured"],
                                                                                     strict=True)), 2),
        "per_round_plain": [round(x, 1) for x in rates["plain"]],
        "per_round_secured": [round(x, 1) for x in rates["secured"]],
        "plain_records": plain.records, "plain_ok": plain.ok,
        "secured_records": secured.records, "secured_ok": secured.ok, "secured_heads": secured.heads,
        "plain_trail_bytes": trail_bytes["plain"], "secured_trail_bytes": trail_bytes["secured"],
        "secured_heads_bytes": heads_bytes, **writer,
    }


def print_summary(figures: dict[str, Any]) -> None:
    """The figures in words."""
    print(f"{figures['streams']} streams x {figures['max_tokens']} tokens, median of {figures['rounds']} rounds "
          f"(heads every {figures['head_every']} records and at close)")
    print(f"  Gateway, plain chain            : {figures['plain_tokens_per_s']:9.1f} tok/s")
    print(f"  Gateway, signed + encrypted     : {figures['secured_tokens_per_s']:9.1f} tok/s")
    print(f"  throughput loss                 : {figures['throughput_loss_pct']:6.2f} %  (target <= 5 %); median of "
          f"the rounds' paired losses {figures['paired_loss_pct']:.2f} %; in CPU time per token "
          f"{figures['cpu_loss_pct']:.2f} %")
    print(f"  trails verified                 : plain {figures['plain_records']} records ok={figures['plain_ok']}; "
          f"secured {figures['secured_records']} records, {figures['secured_heads']} heads ok={figures['secured_ok']}")
    print(f"  writer per record (wall / CPU)  : plain {figures['plain_writer_us_per_record']} / "
          f"{figures['plain_writer_cpu_us_per_record']} us; secured {figures['secured_writer_us_per_record']} / "
          f"{figures['secured_writer_cpu_us_per_record']} us  ({figures['writer_records']} records, fsync never)")
    print(f"  Gateway CPU per token (no model): plain {figures['plain_gateway_cpu_us_per_token']} us, secured "
          f"{figures['secured_gateway_cpu_us_per_token']} us: the trail adds "
          f"{figures['audit_cpu_us_per_token_added']} us/token")
    print(f"  verify {figures['writer_records']} records          : plain {figures['plain_verify_s']} s; "
          f"secured (every head) {figures['secured_verify_s']} s; one inclusion proof {figures['prove_s']} s")


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run, print a summary (or JSON)."""
    parser = bench_parser(__doc__, threads=True)
    parser.add_argument("--model", default=None, help="GGUF file or HF directory (default: embedded SmolLM2)")
    parser.add_argument("--streams", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--head-every", type=int, default=64,
                        help="sign a tree head every N records (library default 1000; 64: one per round of 64 streams)")
    parser.add_argument("--records", type=int, default=5000, help="records of the writer-only measurement")
    args = parser.parse_args(argv)
    if min(args.streams, args.max_tokens, args.rounds, args.head_every, args.records) < 1:
        parser.error("--streams, --max-tokens, --rounds, --head-every and --records must be >= 1")
    emit(asyncio.run(run(args)), args.json, human=print_summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
