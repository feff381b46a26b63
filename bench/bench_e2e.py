"""End-to-end throughput and latency of bastion versus llama-cpp-python and HF transformers.

Workload: N concurrent requests (default 64) of exactly P prompt tokens (default 128) generating
exactly M tokens each (default 64, greedy, EOS ignored) on the embedded SmolLM2-135M-Instruct GGUF.
bastion serves them with one ``LLM.generate`` call; llama-cpp-python (same GGUF, n_threads = cores)
serves them one after another, as its Python API does; HF transformers (fp32, weights dequantized
from the same GGUF) runs ``generate`` in left-padded batches. All engines run in the same process,
one after another, so a busy machine slows them alike: compare the ratios, not the absolute figures.

    python -m bench.bench_e2e                  # full run, human-readable
    python -m bench.bench_e2e --json           # one JSON object
    python -m bench.bench_e2e --quick --json   # CI-sized
    python -m bench.bench_e2e --device cuda    # GPU: SmolLM2 + a random-weight Llama-1B-shaped model
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from bench.common import (
    LlamaCppPeer,
    RunResult,
    bench_parser,
    build_prompts,
    emit,
    llamacpp_available,
    pct,
    profile_breakdown,
    run_bastion_batch,
    run_bastion_decode_phase,
    run_bastion_single,
    use_threads,
    warm_up,
)

LLAMA_1B_SHAPE = {  # Llama-3.2-1B, except the vocabulary: SmolLM2's tokenizer is reused (49152)
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 2048,
    "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8,
    "head_dim": 64, "vocab_size": 49152, "max_position_embeddings": 4096, "rope_theta": 500000.0,
    "rms_norm_eps": 1e-5, "tie_word_embeddings": True, "hidden_act": "silu", "torch_dtype": "bfloat16",
}


def hf_available() -> bool:
    """Whether transformers (and the gguf + accelerate it needs for GGUF weights) can be imported."""
    try:
        import accelerate  # noqa: F401
        import gguf  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        return False
    return True


def run_hf(model_path: str, prompts: list[list[int]], max_tokens: int, batch: int, device: str,
           pad_id: int) -> RunResult:
    """HF transformers ``generate`` (fp32 on CPU, bf16 on CUDA), greedy, in left-padded batches."""
    import torch
    from transformers import AutoModelForCausalLM

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    path = Path(model_path)
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=dtype)
    model = model.to(device).eval()
    res = RunResult("hf-transformers", 0.0, sum(len(p) for p in prompts), 0)
    start = time.perf_counter()
    for i in tqdm(range(0, len(prompts), batch), desc="hf generate", unit="batch", leave=False):
        chunk = prompts[i:i + batch]
        width = max(len(p) for p in chunk)
        ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in chunk], device=device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in chunk], device=device)
        with torch.inference_mode():
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_tokens,
                                 min_new_tokens=max_tokens, do_sample=False, pad_token_id=pad_id)
        res.output_tokens += (out.shape[1] - width) * len(chunk)
    if device != "cpu":
        torch.cuda.synchronize()
    res.wall_s = time.perf_counter() - start
    return res


def make_random_llama_dir(directory: Path, tokenizer: Any) -> Path:
    """A Llama-1B-shaped HF directory with random bf16 safetensors and SmolLM2's tokenizer."""
    import torch
    from safetensors.torch import save_file

    c = LLAMA_1B_SHAPE
    h, inter, kv = c["hidden_size"], c["intermediate_size"], c["num_key_value_heads"] * c["head_dim"]
    gen = torch.Generator().manual_seed(0)

    def rand(*shape: int) -> torch.Tensor:
        return (torch.randn(*shape, generator=gen) * 0.02).to(torch.bfloat16)

    weights = {"model.embed_tokens.weight": rand(c["vocab_size"], h),
               "model.norm.weight": torch.ones(h, dtype=torch.bfloat16)}
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        weights.update({
            p + "self_attn.q_proj.weight": rand(h, h), p + "self_attn.k_proj.weight": rand(kv, h),
            p + "self_attn.v_proj.weight": rand(kv, h), p + "self_attn.o_proj.weight": rand(h, h),
            p + "mlp.gate_proj.weight": rand(inter, h), p + "mlp.up_proj.weight": rand(inter, h),
            p + "mlp.down_proj.weight": rand(h, inter),
            p + "input_layernorm.weight": torch.ones(h, dtype=torch.bfloat16),
            p + "post_attention_layernorm.weight": torch.ones(h, dtype=torch.bfloat16),
        })
    save_file(weights, str(directory / "model.safetensors"))
    (directory / "config.json").write_text(json.dumps(c))
    (directory / "generation_config.json").write_text(json.dumps({"eos_token_id": 2, "bos_token_id": 1}))
    (directory / "tokenizer_config.json").write_text(json.dumps({}))
    tokenizer.save(directory)
    return directory


def bastion_figures(llm: Any, prompts: list[list[int]], max_tokens: int, prefix: str) -> dict[str, Any]:
    """Batched run + single-stream decode of one bastion engine, as flat ``prefix_*`` figures."""
    warm_up(llm, prompts)
    batch = run_bastion_batch(llm, prompts, max_tokens)
    single = run_bastion_single(llm, prompts[0], max_tokens)
    decode = run_bastion_decode_phase(llm, prompts, max_tokens)
    out = {f"{prefix}_{k}": v for k, v in batch.summary().items()}
    out[f"{prefix}_single_stream_decode_tok_s"] = round(single, 2)
    out[f"{prefix}_batched_decode_tok_s"] = round(decode, 2)
    return out


def run_cpu(args: argparse.Namespace) -> dict[str, Any]:
    """The CPU comparison: bastion, llama-cpp-python and (optionally) HF on the same prompts."""
    import bastion
    from bastion.model import default_model_path

    threads = use_threads(args.threads)
    model_path = default_model_path()
    llm = bastion.LLM(num_threads=threads, max_num_seqs=max(args.requests, 1), enable_prefix_caching=False,
                      max_num_batched_tokens=args.max_num_batched_tokens)
    prompts = build_prompts(llm.tokenizer, args.requests, args.prompt_tokens)
    result: dict[str, Any] = {"workload": f"{args.requests} req x {args.prompt_tokens} prompt x "
                                          f"{args.max_tokens} output, greedy, ignore_eos"}
    figures = bastion_figures(llm, prompts, args.max_tokens, "bastion")
    result.update(figures)
    if args.profile:
        result["bastion_profile_pct"] = profile_breakdown(
            lambda: run_bastion_batch(llm, prompts, args.max_tokens))
    result["bastion_tok_s"] = figures["bastion_output_tok_s"]
    if llamacpp_available() and not args.skip_llamacpp:
        peer = LlamaCppPeer(model_path, n_ctx=args.prompt_tokens + args.max_tokens + 64, n_threads=threads)
        peer.generate(prompts[0][:16], 2)  # warm-up
        lc = peer.run(prompts, args.max_tokens, progress=not args.json)
        result.update({f"llamacpp_{k}": v for k, v in lc.summary().items()})
        result["llamacpp_tok_s"] = round(lc.output_tok_s, 2)
        single = 1.0 / pct(lc.tpot_s, 50) if lc.tpot_s else float("nan")
        result["llamacpp_single_stream_decode_tok_s"] = round(single, 2)
        result["ratio_vs_llamacpp"] = round(result["bastion_tok_s"] / lc.output_tok_s, 3)
        del peer
    else:
        result.update(llamacpp_tok_s=None, ratio_vs_llamacpp=None)
    if hf_available() and not args.skip_hf:
        pad_id = llm.tokenizer.eos_token_ids[0]
        hf = run_hf(model_path, prompts, args.max_tokens, args.hf_batch, "cpu", pad_id)
        result.update({f"hf_{k}": v for k, v in hf.summary().items()})
        result["ratio_vs_hf"] = round(result["bastion_tok_s"] / hf.output_tok_s, 3)
    return result


def run_cuda(args: argparse.Namespace) -> dict[str, Any]:
    """The GPU run: SmolLM2 (bastion vs HF on the same GPU) and a random-weight Llama-1B shape."""
    import bastion
    import torch
    from bastion.model import default_model_path

    result: dict[str, Any] = {}
    llm = bastion.LLM(device="cuda", max_num_seqs=max(args.requests, 1), enable_prefix_caching=False,
                      max_num_batched_tokens=args.max_num_batched_tokens)
    prompts = build_prompts(llm.tokenizer, args.requests, args.prompt_tokens)
    result.update(bastion_figures(llm, prompts, args.max_tokens, "bastion"))
    result["bastion_tok_s"] = result["bastion_output_tok_s"]
    if hf_available() and not args.skip_hf:
        hf = run_hf(default_model_path(), prompts, args.max_tokens, args.hf_batch, "cuda",
                    llm.tokenizer.eos_token_ids[0])
        result.update({f"hf_{k}": v for k, v in hf.summary().items()})
        result["ratio_vs_hf"] = round(result["bastion_tok_s"] / hf.output_tok_s, 3)
    tokenizer = llm.tokenizer
    del llm
    torch.cuda.empty_cache()
    with tempfile.TemporaryDirectory(prefix="bastion-llama1b-") as tmp:
        directory = make_random_llama_dir(Path(tmp), tokenizer)
        big = bastion.LLM(model=str(directory), device="cuda", max_num_seqs=max(args.requests, 1),
                          enable_prefix_caching=False,
                          max_num_batched_tokens=args.max_num_batched_tokens)
        result.update(bastion_figures(big, prompts, args.max_tokens, "llama1b_random"))
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (``--quick`` shrinks the workload for CI)."""
    ap = bench_parser(__doc__, threads=True)
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--max-num-batched-tokens", type=int, default=2048)
    ap.add_argument("--hf-batch", type=int, default=32)
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--skip-llamacpp", action="store_true")
    ap.add_argument("--skip-hf", action="store_true")
    ap.add_argument("--profile", action="store_true", help="also a cProfile breakdown of bastion's batched run")
    ap.add_argument("--quick", action="store_true", help="8 requests x 32 prompt x 16 output tokens")
    args = ap.parse_args(argv)
    if args.quick:
        args.requests, args.prompt_tokens, args.max_tokens, args.hf_batch = 8, 32, 16, 8
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its figures."""
    args = parse_args(argv)
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            print("bench_e2e: --device cuda needs a CUDA GPU, and torch sees none on this host "
                  f"(torch {torch.__version__}); run without --device for the CPU comparison.",
                  file=sys.stderr)
            return 2
        result = run_cuda(args)
    else:
        result = run_cpu(args)
    emit(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
