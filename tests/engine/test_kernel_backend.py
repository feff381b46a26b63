"""EngineConfig.kernel_backend end to end: the same tiny model gives the same tokens on every backend,
and a backend that cannot run here is refused when the engine is built, naming the knob."""

from __future__ import annotations

from pathlib import Path

import bastion
import pytest
import torch
from bastion import SamplingParams
from bastion.engine.cuda_graphs import graph_blockers
from bastion.ops import available_backends, dispatch

from ..helpers.tiny_models import TINY_VOCAB, save_with_tokenizer

# different lengths; with 8 tokens a step the long one is chunked, so steps mix prefill and decode
PROMPTS = [[5, 9, 17], [3 + i for i in range(11)], [100 + 3 * i for i in range(6)]]
GREEDY = SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True, logprobs=1)
TRITON = available_backends()["triton"]
if TRITON == "available":
    from bastion import kernels

    if not kernels.interpreted():  # a GPU host (tests/conftest.py sets TRITON_INTERPRET only without one)
        TRITON = "triton runs on CUDA tensors only here (no TRITON_INTERPRET); these engines run on the CPU"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random GQA Llama (4 q heads / 2 kv heads, head_dim 32, 2 layers) saved as an HF directory.

    Weights are drawn wider than HF's default so attention is sharp and each token depends on its context.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=TINY_VOCAB, hidden_size=128, intermediate_size=192, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         rms_norm_eps=1e-5, tie_word_embeddings=False, initializer_range=0.3)
    return save_with_tokenizer(LlamaForCausalLM(config).eval(), tmp_path_factory.mktemp("tiny_llama"))


def run(model_dir: Path, kernel_backend: str, dtype: str) -> tuple[list[list[int]], list[list[float]]]:
    """Greedy tokens and their logprobs of ``PROMPTS`` on a CPU engine with ``kernel_backend``."""
    llm = bastion.LLM(model=str(model_dir), kernel_backend=kernel_backend, device="cpu", dtype=dtype,
                      block_size=4, num_kv_blocks=32, max_model_len=64, max_num_batched_tokens=8,
                      enable_prefix_caching=False, kv_cache_dtype="fp32" if dtype == "float32" else "fp16")
    outs = llm.generate(PROMPTS, GREEDY, use_tqdm=False)
    logprobs = [[step[t] for step, t in zip(o.logprobs, o.token_ids, strict=True)] for o in outs]
    return [o.token_ids for o in outs], logprobs


@pytest.fixture(scope="module")
def reference(model_dir: Path) -> dict[str, tuple[list[list[int]], list[list[float]]]]:
    """The torch reference backend's run, per dtype."""
    return {dtype: run(model_dir, "torch", dtype) for dtype in ("float32", "float16")}


@pytest.mark.parametrize(("kernel_backend", "dtype", "tol"), [
    pytest.param("triton", "float32", 1e-4, marks=pytest.mark.skipif(TRITON != "available", reason=TRITON)),
    pytest.param("triton", "float16", 3e-2, marks=pytest.mark.skipif(TRITON != "available", reason=TRITON)),
    ("cpu", "float32", 1e-4),
    ("auto", "float32", 1e-4),
])
def test_every_backend_generates_the_reference_tokens(model_dir: Path, reference: dict, kernel_backend: str,
                                                      dtype: str, tol: float) -> None:
    tokens, logprobs = run(model_dir, kernel_backend, dtype)
    ref_tokens, ref_logprobs = reference[dtype]
    assert len({tuple(t) for t in ref_tokens}) == len(PROMPTS)  # continuations depend on the prompt
    assert tokens == ref_tokens
    torch.testing.assert_close(torch.tensor(logprobs), torch.tensor(ref_logprobs), rtol=0, atol=tol)


def test_the_model_and_sampler_carry_the_chosen_backends(model_dir: Path) -> None:
    engine = bastion.LLM(model=str(model_dir), kernel_backend="cpu", device="cpu", num_kv_blocks=8).engine
    model = engine.loaded.model
    # the cpu backend has no rotary or sampling kernel: those go where "auto" sends them
    assert model.ops_backends == {"rms_norm": "cpu", "rotary_embedding": "auto", "reshape_and_cache": "cpu",
                                  "paged_attention": "cpu", "silu_and_mul": "cpu"}
    assert engine.sampler.backend == "auto"
    assert engine.sampler.mask_backend == "cpu"  # the structured-output bitmask has a C++ kernel
    assert {model.layers[0].self_attn.attn_backend, model.layers[1].mlp.backend, model.norm.backend} == {"cpu"}
    torch_engine = bastion.LLM(model=str(model_dir), kernel_backend="torch", device="cpu", num_kv_blocks=8).engine
    assert set(torch_engine.loaded.model.ops_backends.values()) == {"torch"}
    assert torch_engine.sampler.backend == "torch" and torch_engine.sampler.mask_backend == "torch"
    assert not torch_engine.loaded.model.rope_in_place  # rotary through ops.rotary_embedding, not the shortcut


def test_a_backend_that_cannot_run_here_fails_before_the_model_loads(tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-model")  # validation comes first: the path is never read
    # unavailable without a CUDA build, and a CUDA backend on the CPU device everywhere
    with pytest.raises(ValueError, match=r"kernel_backend: backend 'cuda' (is not available|runs on cuda)"):
        bastion.LLM(model=missing, kernel_backend="cuda", device="cpu")
    with pytest.raises(ValueError, match=r"kernel_backend: backend 'cpu' serves none of the ops .*float16"):
        bastion.LLM(model=missing, kernel_backend="cpu", device="cpu", dtype="float16")


def test_an_unknown_backend_is_rejected_by_config_validation() -> None:
    with pytest.raises(ValueError, match="kernel_backend"):
        bastion.LLM(model=None, kernel_backend="bogus")
    with pytest.raises(ValueError, match="attention_backend"):
        bastion.EngineConfig.build(attention_backend="torch")  # the old dead knob is gone


def test_plan_maps_ops_the_backend_lacks_to_auto() -> None:
    dtypes = dict.fromkeys(dispatch.OPS, torch.float32)
    assert dispatch.plan("auto", "cuda", dtypes) == dict.fromkeys(dispatch.OPS, "auto")
    assert dispatch.plan("torch", "cpu", dtypes) == dict.fromkeys(dispatch.OPS, "torch")
    cpu = dispatch.plan("cpu", "cpu", dtypes)
    assert {op for op, b in cpu.items() if b == "auto"} == {"rotary_embedding", "sample"}
    with pytest.raises(ValueError, match="backend 'cpu' runs on cpu tensors, not on cuda"):
        dispatch.plan("cpu", "cuda", dtypes)
    with pytest.raises(ValueError, match="unknown backend 'bogus'"):
        dispatch.plan("bogus", "cpu", dtypes)


def test_graph_blockers_follow_the_chosen_backends() -> None:
    probe = torch.empty(0, dtype=torch.float32)
    chosen = dict.fromkeys(("rms_norm", "silu_and_mul"), "torch")  # the uncapturable reference backend

    def blocked(backends: dict[str, str] | None) -> set[str]:
        return {b.split()[0] for b in graph_blockers(probe, backends)}

    assert blocked(chosen) - blocked(None) == {"rms_norm", "silu_and_mul"}
