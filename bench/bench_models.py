"""Real model sizes on the CPU: bastion against llama.cpp on random-weight GGUFs of 1-8B shapes (issue 10).

For each shape (Llama-3.2-1B, SmolLM2-1.7B, Llama-3.1-8B) and type (Q4_K_M, Q8_0; F16 too) the same
file is served by both engines, with the same threads and the same context (KV cache) length:

  decode      single-stream decode tok/s (1 / time per output token after the first) of one
              32-token prompt generating 64 tokens: ``LLM.generate`` vs llama-cpp-python
  concurrent  16 requests of 64 distinct prompt tokens x 64 output tokens, output tok/s over the
              wall clock of all 16: one ``LLM.generate`` call vs ``llama-server -np 16`` on loopback
              with 16 concurrent ``/completion`` requests (``cache_prompt: false``)
  prefill     a 512-token prompt, tok/s: ``generate`` with ``max_tokens=1`` vs llama-cpp-python
              evaluating the 512 tokens
  load        ``LLM(model=...)`` construction vs ``Llama(model_path=...)`` construction, seconds
  peak RSS    of each engine in its own process (``ru_maxrss`` of a fresh worker process; llama-server's
              ``VmHWM`` read from /proc before it is stopped): the single-stream worker against
              llama-cpp-python's, the concurrent one against llama-server's

Greedy, EOS ignored, prompts of random token ids (no prefix-cache hits, bastion's prefix cache off).
Each engine runs in a process of its own (``--worker``), one after another: llama-server is stopped
before bastion starts, and nothing else of this script runs meanwhile. A round is one fresh process
per engine and metric group, llama.cpp first; figures are medians over ``--rounds``, ratios (always
bastion / llama.cpp: above 1 is faster for tok/s, bigger/slower for RSS and load) the median of the
per-round ratios. The file is read through once before the first round so neither engine pays
for a cold page cache. ``--json`` prints one object whose ``rows`` hold one entry per (shape, type)
with every sample. This benchmark is not run in CI: the 8B files alone take 16 GB (F16) + 5-9 GB.

    python -m bench.bench_models                                   # every shape, Q4_K_M and Q8_0
    python -m bench.bench_models --shapes smollm2-1.7b --qtypes Q4_K_M --only decode,load --rounds 1
    python -m bench.bench_models --json --threads 2 > models.json

Model files (random weights, nothing downloaded) are built and cached by ``bench/model_files.py`` in
``--workdir`` (default ``$BASTION_BENCH_MODELS`` or /root/bench-models): F16 written with gguf-py,
quantized with llama.cpp's ``llama-quantize``. The llama.cpp tools (``llama-quantize``,
``llama-server``) come from the llama-cpp-python sdist's vendored llama.cpp, the same source the
Python peer was built from::

    pip download --no-deps --no-binary :all: llama-cpp-python && tar xzf llama_cpp_python-*.tar.gz
    cd llama_cpp_python-*/vendor/llama.cpp
    cmake -B build -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DCMAKE_BUILD_TYPE=Release
    cmake --build build -j --target llama-quantize llama-server llama-bench llama-batched-bench
    export LLAMA_CPP_BIN=$PWD/build/bin

``$LLAMA_CPP_BIN`` (or ``PATH``) is where they are looked for. Without llama-cpp-python or
llama-server the bastion figures are still measured and the peer's are ``null``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from bench.common import (
    LlamaCppPeer,
    bench_parser,
    emit,
    llamacpp_available,
    num_cores,
    run_bastion_batch,
    use_threads,
    vm_hwm_mb,
)
from bench.model_files import SHAPES, llama_cpp_tool, model_file

METRICS = ("decode", "concurrent", "prefill", "load")
SINGLE_METRICS = ("decode", "prefill", "load")  # measured by the single-stream workers
DEFAULT_WORKDIR = "/root/bench-models"
CONTEXT_SLACK = 256
BLOCK_SIZE = 16  # bastion's default KV block size
FIRST_TOKEN, LAST_TOKEN = 2, 257  # the byte-level tokens of model_files' vocab: no BOS/EOS, no specials

# figure -> (label, unit) of the table
LABELS = {
    "decode": ("decode, 1 stream", "tok/s"), "concurrent": ("16 concurrent, output", "tok/s"),
    "prefill": ("prefill 512", "tok/s"), "load": ("load", "s"),
    "rss_single": ("peak RSS, 1 stream", "MB"), "rss_concurrent": ("peak RSS, concurrent", "MB"),
}


# ---------------------------------------------------------------------------------------------- workload

def token_prompts(n: int, length: int, seed: int) -> list[list[int]]:
    """``n`` prompts of ``length`` random byte-level token ids; different seeds give different prompts."""
    rng = random.Random(seed)
    return [[rng.randint(FIRST_TOKEN, LAST_TOKEN) for _ in range(length)] for _ in range(n)]


def decode_prompt(args: argparse.Namespace) -> list[int]:
    return token_prompts(1, args.decode_prompt_tokens, 1)[0]


def prefill_prompts(args: argparse.Namespace) -> tuple[list[int], list[int]]:
    """(warm-up prompt, timed prompt): both ``--prefill-tokens`` long, different from the first token."""
    warm, timed = token_prompts(2, args.prefill_tokens, 2)
    return warm, timed


def concurrent_prompts(args: argparse.Namespace) -> list[list[int]]:
    return token_prompts(args.requests, args.prompt_tokens, 3)


def context_length(args: argparse.Namespace) -> int:
    """The KV cache length both engines get: the largest workload plus slack, a multiple of 256."""
    need = max(args.requests * (args.prompt_tokens + args.max_tokens), args.prefill_tokens + 8,
               args.decode_prompt_tokens + args.decode_tokens) + CONTEXT_SLACK
    return -(-need // 256) * 256


def peak_rss_mb() -> float:
    """This process's peak resident set (Linux reports ``ru_maxrss`` in KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


# ---------------------------------------------------------------------------------------------- workers

def bastion_worker(args: argparse.Namespace, job: str, metrics: set[str]) -> dict[str, Any]:
    """One bastion engine in this process: its load time, then the ``job``'s metrics; peak RSS last."""
    import bastion

    from bench.common import greedy_params, warm_up

    threads = use_threads(args.threads)
    ctx = context_length(args)
    start = time.perf_counter()
    options = dict(option.split("=", 1) for option in args.bastion_option)
    llm = bastion.LLM(model=args.model, num_threads=threads, max_model_len=ctx, num_kv_blocks=-(-ctx // BLOCK_SIZE),
                      block_size=BLOCK_SIZE, max_num_seqs=args.requests, enable_prefix_caching=False, **options)
    out: dict[str, Any] = {"load_s": time.perf_counter() - start, "context": ctx,
                           "kv_cache_dtype": llm.config.kv_cache_dtype}
    if job == "concurrent":
        prompts = concurrent_prompts(args)
        warm_up(llm, prompts)
        run = run_bastion_batch(llm, prompts, args.max_tokens)
        out.update(concurrent_tok_s=run.output_tok_s, concurrent_wall_s=run.wall_s,
                   concurrent_output_tokens=run.output_tokens)
    else:
        prompt = decode_prompt(args)
        llm.generate([prompt[:8]], greedy_params(4), use_tqdm=False)  # warm-up
        if "decode" in metrics:
            res = llm.generate([prompt], greedy_params(args.decode_tokens), use_tqdm=False)[0]
            tpot = res.metrics.time_per_output_token
            out["decode_tok_s"] = 1.0 / tpot if tpot else None
        if "prefill" in metrics:
            warm, timed = prefill_prompts(args)
            llm.generate([warm], greedy_params(1), use_tqdm=False)
            start = time.perf_counter()
            llm.generate([timed], greedy_params(1), use_tqdm=False)
            out["prefill_tok_s"] = len(timed) / (time.perf_counter() - start)
    out["rss_mb"] = peak_rss_mb()
    return out


def llamacpp_worker(args: argparse.Namespace, metrics: set[str]) -> dict[str, Any]:
    """llama-cpp-python in this process (no torch imported): load, decode, prefill; peak RSS last."""
    ctx = context_length(args)
    threads = args.threads or num_cores()
    start = time.perf_counter()
    peer = LlamaCppPeer(args.model, n_ctx=ctx, n_threads=threads)
    out: dict[str, Any] = {"load_s": time.perf_counter() - start, "context": ctx}
    prompt = decode_prompt(args)
    peer.generate(prompt[:8], 4)  # warm-up
    if "decode" in metrics:
        _, tpot, _ = peer.generate(prompt, args.decode_tokens)
        out["decode_tok_s"] = 1.0 / tpot if tpot else None
    if "prefill" in metrics:
        warm, timed = prefill_prompts(args)
        for tokens in (warm, timed):
            peer.llm.reset()  # a fresh context: all 512 tokens are evaluated
            start = time.perf_counter()
            peer.llm.eval(tokens)
            elapsed = time.perf_counter() - start
        out["prefill_tok_s"] = len(timed) / elapsed
    out["rss_mb"] = peak_rss_mb()
    return out


def run_worker(args: argparse.Namespace) -> int:
    """``--worker ENGINE``: measure in this process, write the figures as JSON to ``--result``."""
    metrics = set(args.only)
    if args.worker == "bastion":
        out = bastion_worker(args, args.job, metrics)
    else:
        out = llamacpp_worker(args, metrics)
    Path(args.result).write_text(json.dumps(out))
    return 0


def spawn_worker(args: argparse.Namespace, engine: str, job: str, model: Path, threads: int) -> dict[str, Any]:
    """Run one worker process to its end; its figures, or ``{"error": ...}`` with its stderr's tail."""
    with tempfile.TemporaryDirectory(prefix="bench-models-") as tmp:
        result, log = Path(tmp) / "result.json", Path(tmp) / "stderr.log"
        cmd = [sys.executable, "-m", "bench.bench_models", "--worker", engine, "--job", job, "--model", str(model),
               "--result", str(result), "--threads", str(threads), "--only", ",".join(args.only),
               "--decode-prompt-tokens", str(args.decode_prompt_tokens), "--decode-tokens", str(args.decode_tokens),
               "--requests", str(args.requests), "--prompt-tokens", str(args.prompt_tokens),
               "--max-tokens", str(args.max_tokens), "--prefill-tokens", str(args.prefill_tokens),
               *[f"--bastion-option={option}" for option in args.bastion_option]]
        with log.open("w") as err:
            try:
                proc = subprocess.run(cmd, stdout=err, stderr=err, timeout=args.worker_timeout, check=False,
                                      cwd=Path(__file__).resolve().parents[1])
                code: int | str = proc.returncode
            except subprocess.TimeoutExpired:
                code = f"timeout after {args.worker_timeout} s"
        if code == 0 and result.is_file():
            return json.loads(result.read_text())
        tail = log.read_text(errors="replace")[-2000:]
        return {"error": f"{engine} worker ({job}) exited with {code}: {tail}"}


# ---------------------------------------------------------------------------------------------- llama-server

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, body: dict[str, Any], timeout: float) -> dict[str, Any]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


def llama_server_run(args: argparse.Namespace, model: Path, threads: int) -> dict[str, Any]:
    """Start ``llama-server -np N``, time N concurrent ``/completion`` requests, read its VmHWM, stop it."""
    try:
        binary = llama_cpp_tool("llama-server")
    except FileNotFoundError as exc:
        return {"error": str(exc)}
    ctx, port = context_length(args), _free_port()
    cmd = [binary, "-m", str(model), "-np", str(args.requests), "-c", str(ctx), "-t", str(threads),
           "-tb", str(threads), "--host", "127.0.0.1", "--port", str(port), "--cache-ram", "0"]
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile() as log:
        start = time.perf_counter()
        server = subprocess.Popen(cmd, stdout=log, stderr=log)
        try:
            while True:  # /health answers 200 once the model is loaded
                if server.poll() is not None:
                    raise RuntimeError(f"llama-server exited with {server.returncode}")
                if time.perf_counter() - start > args.worker_timeout:
                    raise RuntimeError(f"llama-server not ready after {args.worker_timeout} s")
                try:
                    with urllib.request.urlopen(base + "/health", timeout=5) as resp:
                        if resp.status == 200:
                            break
                except (urllib.error.URLError, OSError):
                    pass
                time.sleep(0.2)
            ready_s = time.perf_counter() - start
            timeout = float(args.worker_timeout)

            def complete(prompt: list[int], n: int) -> int:
                body = {"prompt": prompt, "n_predict": n, "ignore_eos": True, "temperature": 0.0,
                        "cache_prompt": False, "stream": False}
                return int(_post(base + "/completion", body, timeout)["tokens_predicted"])

            prompts = concurrent_prompts(args)
            complete(prompts[0][:32], 4)  # warm-up
            barrier = threading.Barrier(len(prompts) + 1)

            def client(prompt: list[int]) -> int:
                barrier.wait()
                return complete(prompt, args.max_tokens)

            with ThreadPoolExecutor(len(prompts)) as pool:
                futures = [pool.submit(client, p) for p in prompts]
                barrier.wait()
                start = time.perf_counter()
                produced = sum(f.result() for f in futures)
                wall = time.perf_counter() - start
            return {"concurrent_tok_s": produced / wall, "concurrent_wall_s": wall,
                    "concurrent_output_tokens": produced, "rss_mb": vm_hwm_mb(server.pid), "ready_s": ready_s,
                    "context": ctx}
        except Exception as exc:  # reported in the row; the benchmark goes on
            log.seek(0)
            return {"error": f"llama-server: {exc}: {log.read().decode(errors='replace')[-2000:]}"}
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def llama_server_version() -> str | None:
    try:
        proc = subprocess.run([llama_cpp_tool("llama-server"), "--version"], capture_output=True, text=True,
                              timeout=60, check=False)
    except (FileNotFoundError, OSError, subprocess.TimeoutExpired):
        return None
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("version")]
    return lines[0].split(":", 1)[1].strip() if lines else None


# ---------------------------------------------------------------------------------------------- orchestration

def read_through(path: Path) -> None:
    """Read ``path`` once so the page cache holds it for whichever engine loads it first."""
    with path.open("rb") as f:
        while f.read(64 << 20):
            pass


def summarize(bastion: list[float | None], peer: list[float | None], peer_name: str) -> dict[str, Any]:
    """Medians of both engines' samples and the median per-round ratio bastion / llama.cpp."""
    def median(values: list[float | None]) -> float | None:
        kept = [v for v in values if v is not None]
        return round(statistics.median(kept), 3) if kept else None

    pairs = [(b, p) for b, p in zip(bastion, peer) if b is not None and p]
    return {"bastion": median(bastion), "llama_cpp": median(peer), "peer": peer_name,
            "ratio": round(statistics.median(b / p for b, p in pairs), 3) if pairs else None,
            "bastion_samples": [None if v is None else round(v, 3) for v in bastion],
            "llama_cpp_samples": [None if v is None else round(v, 3) for v in peer]}


def bench_file(args: argparse.Namespace, shape: str, qtype: str, threads: int, bar: Any) -> dict[str, Any]:
    """Every selected metric of one (shape, type), both engines, ``--rounds`` times."""
    bar.set_description(f"{shape} {qtype}: model file")
    path = model_file(shape, qtype, args.workdir)
    read_through(path)
    row: dict[str, Any] = {"shape": shape, "qtype": qtype, "file": str(path),
                           "file_gb": round(path.stat().st_size / 1e9, 3), "parameters": SHAPES[shape].parameters,
                           "context": context_length(args), "errors": []}
    single = [m for m in SINGLE_METRICS if m in args.only]
    samples: dict[str, dict[str, list[float | None]]] = {}

    def record(key: str, engine: str, res: dict[str, Any], field: str) -> None:
        samples.setdefault(key, {"bastion": [], "llama_cpp": []})[engine].append(res.get(field))

    def run(engine: str, job: str) -> dict[str, Any]:
        bar.set_description(f"{shape} {qtype}: {engine} {job}")
        if engine == "llama-server":
            res = llama_server_run(args, path, threads)
        else:
            res = spawn_worker(args, engine, job, path, threads)
        if "error" in res:
            row["errors"].append(res["error"])
        bar.update(1)
        return res

    peer_single = "llama-cpp-python" if llamacpp_available() else None
    for _ in range(args.rounds):
        if single:
            peer = run("llama-cpp-python", "single") if peer_single else {}
            ours = run("bastion", "single")
            for metric in single:
                record(metric, "llama_cpp", peer, f"{metric}_tok_s" if metric != "load" else "load_s")
                record(metric, "bastion", ours, f"{metric}_tok_s" if metric != "load" else "load_s")
            record("rss_single", "llama_cpp", peer, "rss_mb")
            record("rss_single", "bastion", ours, "rss_mb")
            row.setdefault("kv_cache_dtype", ours.get("kv_cache_dtype"))
        if "concurrent" in args.only:
            server = run("llama-server", "concurrent")  # stopped before bastion starts
            ours = run("bastion", "concurrent")
            record("concurrent", "llama_cpp", server, "concurrent_tok_s")
            record("concurrent", "bastion", ours, "concurrent_tok_s")
            record("rss_concurrent", "llama_cpp", server, "rss_mb")
            record("rss_concurrent", "bastion", ours, "rss_mb")
            record("load_server", "llama_cpp", server, "ready_s")  # llama-server: start to /health 200
            record("load_server", "bastion", ours, "load_s")
    for key, got in samples.items():
        peer_name = "llama-server" if key in ("concurrent", "rss_concurrent", "load_server") else peer_single
        row[key] = summarize(got["bastion"], got["llama_cpp"], peer_name or "none")
    return row


def print_table(result: dict[str, Any]) -> None:
    """The rows as an aligned table: one line per (shape, type, metric)."""
    print(f"\n{'shape':<14}{'type':<8}{'metric':<24}{'bastion':>10}{'llama.cpp':>11}{'ratio':>8}  unit (peer)")
    for row in result["rows"]:
        for key, (label, unit) in LABELS.items():
            if key not in row:
                continue
            fig = row[key]

            def fmt(value: float | None, width: int) -> str:
                return f"{'-':>{width}}" if value is None else f"{value:>{width}.2f}"

            ratio = "-" if fig["ratio"] is None else f"{fig['ratio']:.2f}x"
            print(f"{row['shape']:<14}{row['qtype']:<8}{label:<24}{fmt(fig['bastion'], 10)}{fmt(fig['llama_cpp'], 11)}"
                  f"{ratio:>8}  {unit} ({fig['peer']})")
        for error in row["errors"]:
            print(f"{row['shape']} {row['qtype']}: ERROR {error.splitlines()[0] if error else ''}")
    print(f"\nthreads {result['threads']}, context {result['context']} tokens for both engines, "
          f"{result['rounds']} round(s); ratio = bastion / llama.cpp (median of per-round ratios)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = bench_parser(__doc__, threads=True)
    ap.add_argument("--shapes", nargs="+", choices=list(SHAPES), default=[s for s in SHAPES if s != "smollm2-135m"],
                    help="model shapes (smollm2-135m with --qtypes Q4_1: the embedded default model)")
    ap.add_argument("--qtypes", nargs="+", default=["Q4_K_M", "Q8_0"], help="GGUF types (llama-quantize names, F16)")
    ap.add_argument("--only", default=",".join(METRICS), help=f"comma-separated subset of {','.join(METRICS)}")
    ap.add_argument("--rounds", type=int, default=3, help="fresh worker processes per engine and metric group")
    ap.add_argument("--workdir", type=Path,
                    default=Path(os.environ.get("BASTION_BENCH_MODELS") or DEFAULT_WORKDIR),
                    help="where the model files are built and cached (default $BASTION_BENCH_MODELS or "
                         f"{DEFAULT_WORKDIR})")
    ap.add_argument("--decode-prompt-tokens", type=int, default=32)
    ap.add_argument("--decode-tokens", type=int, default=64)
    ap.add_argument("--requests", type=int, default=16, help="concurrent requests (and llama-server -np)")
    ap.add_argument("--prompt-tokens", type=int, default=64, help="prompt tokens of each concurrent request")
    ap.add_argument("--max-tokens", type=int, default=64, help="output tokens of each concurrent request")
    ap.add_argument("--prefill-tokens", type=int, default=512)
    ap.add_argument("--worker-timeout", type=int, default=3600, help="seconds one engine process may take")
    ap.add_argument("--bastion-option", action="append", default=[], metavar="KEY=VALUE",
                    help="an EngineConfig setting for bastion's engine, e.g. gemm_dtype=bfloat16 (repeatable)")
    # internal: one engine's measurements in this process (spawned by the orchestrator)
    ap.add_argument("--worker", choices=("bastion", "llama-cpp-python"), help=argparse.SUPPRESS)
    ap.add_argument("--job", choices=("single", "concurrent"), default="single", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.only = [m.strip() for m in args.only.split(",") if m.strip()]
    unknown = sorted(set(args.only) - set(METRICS))
    if unknown or not args.only:
        ap.error(f"--only: unknown metric(s) {unknown}; choose from {','.join(METRICS)}")
    if args.rounds < 1:
        ap.error("--rounds must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return run_worker(args)
    threads = args.threads or num_cores()
    single = any(m in args.only for m in SINGLE_METRICS)
    steps = len(args.shapes) * len(args.qtypes) * args.rounds * (2 * single + 2 * ("concurrent" in args.only))
    rows = []
    with tqdm(total=steps, unit="run", desc="bench_models") as bar:
        for shape in args.shapes:
            for qtype in args.qtypes:
                rows.append(bench_file(args, shape, qtype, threads, bar))
    use_threads(threads)  # so the environment block reports the threads both engines ran with
    result = {"rows": rows, "threads": threads, "rounds": args.rounds, "context": context_length(args),
              "metrics": args.only, "llama_server_version": llama_server_version(),
              "bastion_options": args.bastion_option,
              "workload": {"decode": f"1 x {args.decode_prompt_tokens} prompt x {args.decode_tokens} output",
                           "concurrent": f"{args.requests} x {args.prompt_tokens} prompt x {args.max_tokens} output",
                           "prefill": f"1 x {args.prefill_tokens} prompt"}}
    emit(result, args.json, print_table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
