"""The memory plan: weights and KV cache share one budget, checked before any weight is read; the KV
cache is fp16 on the CPU by default; a quantized file's weights are never expanded to fp32."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import bastion
import gguf
import numpy as np
import pytest
import torch

from ..helpers.gguf_builder import add_byte_level_tokenizer, add_llama_hyperparameters


def _random_q4_0_gguf(path: Path, *, hidden: int = 1024, intermediate: int = 4096, layers: int = 4,
                      vocab: int = 32000) -> Path:
    """A Llama GGUF of random Q4_0 blocks (valid fp16 scales): ~100M weights, 57 MB on disk, 400 MB as fp32."""
    rng = np.random.default_rng(0)
    writer = gguf.GGUFWriter(str(path), "llama")
    add_llama_hyperparameters(writer, name="random-q4_0", layers=layers, context=256, hidden=hidden,
                              intermediate=intermediate, heads=16, kv_heads=4)
    add_byte_level_tokenizer(writer, vocab)

    def q4_0(rows: int, cols: int) -> np.ndarray:
        blocks = rng.integers(0, 256, size=(rows * cols // 32, 18), dtype=np.uint8)
        blocks[:, :2] = np.full((1, 1), 0.002, dtype=np.float16).view(np.uint8)
        return blocks.reshape(rows, -1)

    kv = hidden // 4
    writer.add_tensor("token_embd.weight", q4_0(vocab, hidden), raw_dtype=gguf.GGMLQuantizationType.Q4_0)
    writer.add_tensor("output_norm.weight", np.ones(hidden, dtype=np.float32))
    for i in range(layers):
        for name, rows, cols in (("attn_q", hidden, hidden), ("attn_k", kv, hidden), ("attn_v", kv, hidden),
                                 ("attn_output", hidden, hidden), ("ffn_gate", intermediate, hidden),
                                 ("ffn_up", intermediate, hidden), ("ffn_down", hidden, intermediate)):
            writer.add_tensor(f"blk.{i}.{name}.weight", q4_0(rows, cols), raw_dtype=gguf.GGMLQuantizationType.Q4_0)
        writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(hidden, dtype=np.float32))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(hidden, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="module")
def q4_file(tmp_path_factory) -> Path:
    return _random_q4_0_gguf(tmp_path_factory.mktemp("q4") / "random-q4_0.gguf")


def test_loading_a_q4_file_allocates_no_fp32_weights(q4_file: Path) -> None:
    """In a fresh process: peak RSS grows by about the mapped file (50 MB; measured +55 MB in all), far less
    than the 400 MB the weights take as fp32."""
    script = textwrap.dedent(f"""
        import resource, torch, bastion.model
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        loaded = bastion.model.load_model({str(q4_file)!r})
        logits = loaded.model.compute_logits(loaded.model.embed_tokens(torch.tensor([5, 6])))
        assert logits.shape == (2, 32000)
        print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
    """)
    grown_mb = int(subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                                  timeout=300).stdout.split()[-1])
    file_mb = q4_file.stat().st_size >> 20
    assert grown_mb < file_mb + 60, f"RSS grew {grown_mb} MB for a {file_mb} MB Q4_0 file (fp32 would be ~400 MB)"


def test_a_model_that_does_not_fit_is_refused_before_any_weight_is_read(q4_file: Path, monkeypatch) -> None:
    import bastion.engine.engine_core as engine_core

    def no_loading(*args: object, **kwargs: object) -> None:
        raise AssertionError("weights were read before the memory check")

    monkeypatch.setattr(engine_core, "load_model", no_loading)
    with pytest.raises(ValueError, match=r"memory_budget_mb: the model needs 5\d MiB of weights plus at least \d+ MiB "
                                         r"of KV cache, more than the budget of 40 MiB"):
        bastion.LLM(model=str(q4_file), memory_budget_mb=40)
    with pytest.raises(ValueError, match="memory_budget_mb"):  # a context that cannot fit beside the weights
        bastion.LLM(model=str(q4_file), memory_budget_mb=51, max_model_len=256, kv_cache_dtype="fp32")


def test_the_kv_cache_takes_what_the_budget_leaves(q4_file: Path) -> None:
    llm = bastion.LLM(model=str(q4_file), memory_budget_mb=70, max_model_len=64)
    plan = llm.engine.memory
    assert plan.kv_dtype == torch.float16
    assert plan.weight_bytes == sum(int(t.n_bytes) for t in gguf.GGUFReader(q4_file).tensors)
    assert plan.weight_bytes + plan.kv_bytes <= 70 << 20 < plan.weight_bytes + plan.kv_bytes + plan.block_bytes
    k_cache = llm.engine.runner.kv_caches[0][0]
    assert k_cache.dtype == torch.float16 and k_cache.shape[0] == plan.num_blocks
    assert llm.generate([[5, 6, 7]], bastion.SamplingParams(max_tokens=4, ignore_eos=True),
                        use_tqdm=False)[0].finish_reason == "length"


def test_kv_cache_dtype_choices(smollm2_path) -> None:
    fp32 = bastion.LLM(model=str(smollm2_path), num_kv_blocks=16, kv_cache_dtype="fp32")
    assert fp32.engine.runner.kv_caches[0][0].dtype == torch.float32
    with pytest.raises(ValueError, match="kv_cache_dtype"):
        bastion.LLM(model=str(smollm2_path), num_kv_blocks=16, kernel_backend="triton", kv_cache_dtype="fp16")
    with pytest.raises(ValueError, match="kv_cache_dtype"):
        bastion.LLM(model=str(smollm2_path), kv_cache_dtype="int8")
