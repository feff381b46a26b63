"""The CPU numerics knobs end to end on the real SmolLM2: ``gemm_dtype`` and ``block_kernel_max_tokens``."""

from __future__ import annotations

import bastion
import pytest
import torch
from bastion.model.quant_linear import bf16_gemm_is_fast, quantized_linears

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
GREEDY = bastion.SamplingParams(max_tokens=12, temperature=0.0)


@pytest.mark.skipif(not bf16_gemm_is_fast(), reason="this CPU emulates bf16: gemm_dtype=bfloat16 is refused here")
def test_bf16_panels_keep_the_greedy_answer(smollm2_path) -> None:
    """bf16 prefill (the chat prompt is one 30+ token step) still answers right; the audit's numerics say so."""
    llm = bastion.LLM(model=str(smollm2_path), num_kv_blocks=64, gemm_dtype="bfloat16")
    linears = quantized_linears(llm.engine.runner.model)
    assert {linear.panel_dtype for linear in linears} == {torch.bfloat16}
    assert {linear.max_tokens for linear in linears} == {8}  # bf16 panels beat the block kernel past 8 rows
    assert "bfloat16 panels" in llm.engine.runner.numerics()
    assert "Paris" in llm.chat(QUESTION, GREEDY, use_tqdm=False)[0].text


def test_block_kernel_threshold_is_a_knob(smollm2_path) -> None:
    panels_only = bastion.LLM(model=str(smollm2_path), num_kv_blocks=64, block_kernel_max_tokens=0)
    assert all(linear.max_tokens == 0 for linear in quantized_linears(panels_only.engine.runner.model))
    assert panels_only.engine.runner.cpu_decoder is None  # no step is small enough for the one-call decoder
    assert "Paris" in panels_only.chat(QUESTION, GREEDY, use_tqdm=False)[0].text
    with pytest.raises(ValueError, match="block_kernel_max_tokens"):
        bastion.LLM(model=str(smollm2_path), block_kernel_max_tokens=-1)
