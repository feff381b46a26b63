"""Helpers for the model tests: drive bastion's model over a paged cache, and transformers as the reference."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from bastion.model import AttentionMetadata, LlamaForCausalLM

Forward = Callable[[torch.Tensor, torch.Tensor, AttentionMetadata], torch.Tensor]


class PagedSequences:
    """Runs sequences through a ``CausalLM`` the way the engine does: flat varlen batches over paged KV.

    Blocks are handed out in a shuffled order so that a wrong block-table lookup cannot go unnoticed.
    """

    def __init__(self, model: LlamaForCausalLM, num_seqs: int = 1, max_len: int = 256, block_size: int = 16,
                 seed: int = 0) -> None:
        blocks_per_seq = -(-max_len // block_size)
        self.model, self.block_size = model, block_size
        self.kv_caches = model.make_kv_caches(num_seqs * blocks_per_seq, block_size)
        order = torch.randperm(num_seqs * blocks_per_seq, generator=torch.Generator().manual_seed(seed))
        self.block_table = order.view(num_seqs, blocks_per_seq).to(torch.int32)
        self.lengths = [0] * num_seqs

    def step(self, chunks: dict[int, list[int]], forward: Forward | None = None) -> torch.Tensor:
        """Feed ``chunks[seq] = new token ids`` for each listed sequence; logits ``[T, vocab]`` of every fed token.

        ``forward(ids, positions, attn)`` replaces the model's own forward over these caches when given.
        """
        seqs = sorted(chunks)
        ids, positions, slots, cu = [], [], [], [0]
        for s in seqs:
            start = self.lengths[s]
            pos = list(range(start, start + len(chunks[s])))
            ids += chunks[s]
            positions += pos
            slots += [int(self.block_table[s, p // self.block_size]) * self.block_size + p % self.block_size for p in pos]
            cu.append(cu[-1] + len(pos))
            self.lengths[s] += len(pos)
        seq_lens = [self.lengths[s] for s in seqs]
        attn = AttentionMetadata(
            slot_mapping=torch.tensor(slots, dtype=torch.int64),
            block_table=self.block_table[seqs],
            seq_lens=torch.tensor(seq_lens, dtype=torch.int32),
            cu_seqlens_q=torch.tensor(cu, dtype=torch.int32),
            max_seqlen_q=max(len(chunks[s]) for s in seqs),
            max_seq_len=max(seq_lens),
        )
        ids_t, positions_t = torch.tensor(ids, dtype=torch.int64), torch.tensor(positions, dtype=torch.int64)
        hidden = (self.model(ids_t, positions_t, attn, self.kv_caches) if forward is None
                  else forward(ids_t, positions_t, attn))
        return self.model.compute_logits(hidden)


def greedy_bastion(model: LlamaForCausalLM, prompt: list[int], num_tokens: int) -> tuple[list[int], list[torch.Tensor]]:
    """Greedy continuation of ``prompt`` (prefill, then one token per step) and the logits of each step."""
    runner = PagedSequences(model, max_len=len(prompt) + num_tokens + 1)
    logits = runner.step({0: prompt})[-1]
    out, all_logits = [], [logits]
    for _ in range(num_tokens - 1):
        out.append(int(logits.argmax()))
        logits = runner.step({0: [out[-1]]})[-1]
        all_logits.append(logits)
    out.append(int(logits.argmax()))
    return out, all_logits


@torch.no_grad()
def greedy_transformers(model: torch.nn.Module, prompt: list[int], num_tokens: int) -> tuple[list[int], list[torch.Tensor]]:
    """Greedy continuation with a transformers model and its own KV cache (eos ignored, like ours)."""
    result = model(torch.tensor([prompt]), use_cache=True)
    out, all_logits = [], []
    for _ in range(num_tokens):
        logits = result.logits[0, -1].float()
        all_logits.append(logits)
        out.append(int(logits.argmax()))
        result = model(torch.tensor([[out[-1]]]), past_key_values=result.past_key_values, use_cache=True)
    return out, all_logits


def transformers_from_gguf(path: Path) -> torch.nn.Module:
    """transformers' own fp32 model of a GGUF file, dequantized and un-permuted by transformers itself.

    ``from_pretrained(gguf_file=...)`` needs ``accelerate``; building from the config and loading
    transformers' converted GGUF state dict is the same conversion without it.
    """
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    config = AutoConfig.from_pretrained(str(path.parent), gguf_file=path.name)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    state = load_gguf_checkpoint(str(path), return_tensors=True, model_to_load=model)["tensors"]
    model.load_state_dict(state, strict=False)
    model.tie_weights()
    return model.eval()


@torch.no_grad()
def max_logit_diff_vs_transformers(model: LlamaForCausalLM, reference: torch.nn.Module, ids: list[int],
                                   decode_steps: int = 4) -> float:
    """Prefill ``ids[:-decode_steps]`` then decode the rest one token at a time with bastion; the max
    |difference| of every position's logits from transformers' single full forward over ``ids``."""
    expected = reference(torch.tensor([ids])).logits[0].float()
    runner = PagedSequences(model, max_len=len(ids) + 1, block_size=4)
    split = len(ids) - decode_steps
    rows = [runner.step({0: ids[:split]})] + [runner.step({0: [t]}) for t in ids[split:]]
    return float((torch.cat(rows) - expected).abs().max())
