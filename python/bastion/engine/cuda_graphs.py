"""CUDA graphs for pure-decode steps: capture the model forward once per padded batch size, then replay.

A decode step is dozens of small kernel launches per layer; at small batch the GPU waits on the
host launching them. A CUDA graph replays the whole forward with one launch. Graphs freeze shapes
and device addresses, so:

* a ladder of batch sizes is captured (``capture_sizes``) and a batch is padded up to the next one
  (``choose_capture_size``);
* every graph reads its inputs from one set of static device buffers sized once for the largest
  size (``StaticDecodeInputs``); a step only copies its arrays into them;
* padded rows are inert: slot -1 (the KV write skips them) and seq_len 1 with an all-zero block-table
  row (they read one token of block 0, which always exists; seq_len 0 would make some kernels compute
  an empty softmax, 0/0). Their outputs are sliced away.

Graphs are captured lazily, on the first step that needs a size: start-up costs nothing and only the
sizes the workload reaches are captured; the first step at each new size pays one eager warm-up
forward (which also JIT-compiles Triton kernels outside the capture) plus the capture. The warm-up
writes the real tokens' K/V, and the replay rewrites the same values, so it is harmless.
``capture_all`` captures every size up front (largest first, so smaller graphs reuse its memory)
for deployments that prefer a predictable first step. All graphs share one memory pool; that is safe
because they never run concurrently and each graph's output tensor stays referenced.

Only pure-decode batches qualify (``is_pure_decode``: every request has exactly one query token);
prefill and mixed steps, and batches above the largest size, run eagerly.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from bastion.model import AttentionMetadata
from bastion.ops import dispatch

if TYPE_CHECKING:
    from bastion import _core

log = logging.getLogger(__name__)

PAD_SLOT = -1  # reshape_and_cache skips negative slots: padded tokens write nothing
PAD_SEQ_LEN = 1  # padded rows read one cached token of block 0 (always a valid block), never an empty range
# Ops that run inside the captured region and must neither synchronise nor read device values on the host.
CAPTURED_OPS: tuple[str, ...] = ("paged_attention", "reshape_and_cache", "rms_norm", "rotary_embedding",
                                 "silu_and_mul")
# The torch reference backend reads seq_lens/cu_seqlens_q with .tolist() and masks slots with a boolean
# index (a device sync and a data-dependent shape): it cannot be captured.
_UNCAPTURABLE_MODULES: frozenset[str] = frozenset({"bastion.ops.torch_ref"})


def capture_sizes(max_num_seqs: int, step: int = 16) -> tuple[int, ...]:
    """The padded batch sizes to capture: powers of two below ``step``, then multiples of ``step``,
    always ending at ``max_num_seqs`` so every schedulable decode batch has a size.

    Multiples (not powers) of ``step`` past it bound the padding waste at ``step - 1`` rows.
    """
    if max_num_seqs < 1 or step < 1:
        raise ValueError(f"max_num_seqs ({max_num_seqs}) and step ({step}) must be positive")
    sizes = {s for s in (1, 2, 4, 8, 16, 32, 64) if s < step}
    sizes.update(range(step, max_num_seqs + 1, step))
    sizes.add(max_num_seqs)
    return tuple(sorted(s for s in sizes if s <= max_num_seqs))


def choose_capture_size(num_seqs: int, sizes: tuple[int, ...]) -> int | None:
    """The smallest captured size >= ``num_seqs`` (``sizes`` ascending), or None if none fits."""
    if num_seqs < 1:
        return None
    i = bisect.bisect_left(sizes, num_seqs)
    return sizes[i] if i < len(sizes) else None


def is_pure_decode(num_scheduled_tokens: np.ndarray) -> bool:
    """True when the step has at least one request and each has exactly one query token."""
    return len(num_scheduled_tokens) > 0 and bool(np.all(num_scheduled_tokens == 1))


@dataclass
class DecodeBatchArrays:
    """Host arrays of one padded decode batch of ``size`` rows (the static buffers' layout)."""

    input_ids: np.ndarray  # int64 [size]
    positions: np.ndarray  # int64 [size]
    slot_mapping: np.ndarray  # int64 [size]
    block_table: np.ndarray  # int32 [size, max_blocks]
    seq_lens: np.ndarray  # int32 [size]
    cu_seqlens_q: np.ndarray  # int32 [size + 1]

    @classmethod
    def allocate(cls, size: int, max_blocks: int) -> DecodeBatchArrays:
        """Zeroed arrays for ``size`` rows of ``max_blocks`` blocks."""
        return cls(np.zeros(size, np.int64), np.zeros(size, np.int64), np.zeros(size, np.int64),
                   np.zeros((size, max_blocks), np.int32), np.zeros(size, np.int32), np.zeros(size + 1, np.int32))


def pad_decode_batch(
    input_ids: np.ndarray,
    positions: np.ndarray,
    slot_mapping: np.ndarray,
    block_table: np.ndarray,
    seq_lens: np.ndarray,
    size: int,
    out: DecodeBatchArrays | None = None,
) -> DecodeBatchArrays:
    """Write a decode batch of R <= ``size`` rows, padded to ``size`` inert rows, into ``out[:size]``.

    ``out`` may have more rows and wider block tables than needed (the static host buffers); only
    its first ``size`` rows are written. Padded rows: token 0 at position 0, slot ``PAD_SLOT``, seq_len
    ``PAD_SEQ_LEN``, an all-zero block-table row. ``cu_seqlens_q`` is ``arange(size + 1)``.
    """
    num_seqs, width = block_table.shape
    if num_seqs > size or len(input_ids) != num_seqs:
        raise ValueError(f"a decode batch of {len(input_ids)} tokens / {num_seqs} sequences does not fit size {size}")
    if out is None:
        out = DecodeBatchArrays.allocate(size, width)
    if out.block_table.shape[0] < size or out.block_table.shape[1] < width:
        raise ValueError(f"buffers of shape {out.block_table.shape} are too small for {size} rows x {width} blocks")
    r = num_seqs
    out.input_ids[:r] = input_ids
    out.input_ids[r:size] = 0
    out.positions[:r] = positions
    out.positions[r:size] = 0
    out.slot_mapping[:r] = slot_mapping
    out.slot_mapping[r:size] = PAD_SLOT
    out.block_table[:r, :width] = block_table
    out.block_table[:size, width:] = 0
    out.block_table[r:size] = 0
    out.seq_lens[:r] = seq_lens
    out.seq_lens[r:size] = PAD_SEQ_LEN
    out.cu_seqlens_q[: size + 1] = np.arange(size + 1, dtype=np.int32)
    return out


def graph_blockers(probe: torch.Tensor, backends: Mapping[str, str] | None = None) -> list[str]:
    """Ops of the captured region whose backend (``backends[op]``, default "auto") for ``probe``'s device
    and dtype cannot be captured."""
    blockers = []
    for op in CAPTURED_OPS:
        fn = dispatch.resolve(op, (backends or {}).get(op, "auto"), probe)
        # under "auto" a partial backend (CUDA decode attention) hands some calls on: check every candidate
        modules = [f.__module__ for f in dispatch.candidates(fn) if f.__module__ in _UNCAPTURABLE_MODULES]
        if modules:
            blockers.append(f"{op} ({', '.join(modules)})")
    return blockers


class StaticDecodeInputs:
    """Device input buffers for ``max_size`` decode rows, allocated once; graphs capture views of them.

    Steps are staged through pinned host arrays and copied with ``non_blocking``; an event recorded
    after the copies keeps the next step from overwriting host memory a copy may still be reading.
    On a CPU device the host arrays are the buffers (used by the CPU tests of the padding).
    """

    def __init__(self, max_size: int, max_blocks: int, block_size: int, device: torch.device) -> None:
        """Allocate host staging and device buffers for ``max_size`` rows of ``max_blocks`` blocks."""
        self.max_size, self.max_blocks, self.block_size, self.device = max_size, max_blocks, block_size, device
        pin = device.type == "cuda"
        host = {
            "input_ids": torch.zeros(max_size, dtype=torch.int64),
            "positions": torch.zeros(max_size, dtype=torch.int64),
            "slot_mapping": torch.full((max_size,), PAD_SLOT, dtype=torch.int64),
            "block_table": torch.zeros((max_size, max_blocks), dtype=torch.int32),
            "seq_lens": torch.full((max_size,), PAD_SEQ_LEN, dtype=torch.int32),
            "cu_seqlens_q": torch.arange(max_size + 1, dtype=torch.int32),
        }
        if pin:  # page-locked, so the non_blocking copies below are truly asynchronous
            host = {name: t.pin_memory() for name, t in host.items()}
        self._host_tensors = host
        self.host = DecodeBatchArrays(**{name: t.numpy() for name, t in host.items()})
        self.dev = host if device.type == "cpu" else {name: t.to(device) for name, t in host.items()}
        # one reusable event: synchronize() waits for its latest record, i.e. the previous step's copies
        self._copied: torch.cuda.Event | None = torch.cuda.Event() if pin else None
        self._pending = False

    def load(self, step: _core.StepOutput, size: int) -> None:
        """Pad ``step`` (a pure-decode scheduler step) to ``size`` rows and place it in the device buffers."""
        if self._pending:
            assert self._copied is not None  # _pending is only set after a record() below
            self._copied.synchronize()  # the previous step's copies have finished reading the host arrays
        pad_decode_batch(step.input_ids, step.positions, step.slot_mapping, step.block_table, step.seq_lens,
                         size, out=self.host)
        if self.device.type == "cpu":
            return
        for name, src in self._host_tensors.items():
            rows = size + 1 if name == "cu_seqlens_q" else size
            self.dev[name][:rows].copy_(src[:rows], non_blocking=True)
        assert self._copied is not None  # a non-CPU device here is CUDA, whose buffers are pinned
        self._copied.record()
        self._pending = True

    def views(self, size: int) -> tuple[torch.Tensor, torch.Tensor, AttentionMetadata]:
        """``(input_ids, positions, attn)`` over the first ``size`` rows: what a graph of that size reads."""
        d = self.dev
        attn = AttentionMetadata(
            slot_mapping=d["slot_mapping"][:size], block_table=d["block_table"][:size], seq_lens=d["seq_lens"][:size],
            cu_seqlens_q=d["cu_seqlens_q"][: size + 1], max_seqlen_q=1,
            max_seq_len=self.max_blocks * self.block_size,  # an upper bound: the graph outlives any one step
        )
        return d["input_ids"][:size], d["positions"][:size], attn


class CudaGraphRunner:
    """Replays captured decode forwards of ``model`` for batches of up to ``max_num_seqs`` sequences.

    ``run`` returns the graph's static hidden-state tensor ``[size, hidden]``: rows past the step's
    sequences are padding. Read it before the next ``run``: the graphs share one memory pool, so a
    replay of ANY size may overwrite it (another graph's intermediates may live in the same memory).
    """

    def __init__(self, model: torch.nn.Module, kv_caches: list[tuple[torch.Tensor, torch.Tensor]],
                 max_num_seqs: int, device: torch.device, sizes: tuple[int, ...] | None = None) -> None:
        """Prepare (not capture) graphs for ``sizes`` (default ``capture_sizes(max_num_seqs)``)."""
        if device.type != "cuda":
            raise ValueError(f"CUDA graphs need a CUDA device, got {device}")
        self.model, self.kv_caches, self.device = model, kv_caches, device
        self.sizes = tuple(sorted(sizes)) if sizes else capture_sizes(max_num_seqs)
        self.block_size = kv_caches[0][0].shape[1]
        self.inputs: StaticDecodeInputs | None = None  # sized by the first step's block-table width
        self.graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self._pool: Any = None
        self.disabled_reason: str | None = None

    @classmethod
    def create(cls, model: torch.nn.Module, kv_caches: list[tuple[torch.Tensor, torch.Tensor]],
               max_num_seqs: int, device: torch.device) -> CudaGraphRunner | None:
        """A runner, or None (with a warning) when an op of the forward would break capture."""
        blockers = graph_blockers(kv_caches[0][0], getattr(model, "ops_backends", None))
        if blockers:
            log.warning("CUDA graphs disabled: these ops resolve to a backend that cannot be captured: %s",
                        ", ".join(blockers))
            return None
        return cls(model, kv_caches, max_num_seqs, device)

    def can_run(self, step: _core.StepOutput) -> bool:
        """Whether ``step`` is a pure-decode batch that fits a captured size (and graphs still work)."""
        if self.disabled_reason is not None or not is_pure_decode(step.num_scheduled_tokens):
            return False
        if self.inputs is not None and step.block_table.shape[1] > self.inputs.max_blocks:
            return False
        return choose_capture_size(len(step.num_scheduled_tokens), self.sizes) is not None

    def run(self, step: _core.StepOutput) -> torch.Tensor | None:
        """Pad ``step`` into the static buffers and replay its size's graph (capturing it first if new).

        Returns None when the capture failed: graphs are then disabled and the caller runs eagerly.
        """
        size = choose_capture_size(len(step.num_scheduled_tokens), self.sizes)
        if size is None:
            raise ValueError(f"no captured size fits {len(step.num_scheduled_tokens)} sequences")
        if self.inputs is None:
            self.inputs = StaticDecodeInputs(self.sizes[-1], step.block_table.shape[1], self.block_size, self.device)
        self.inputs.load(step, size)
        entry = self.graphs.get(size)
        if entry is None:
            try:
                entry = self._capture(size)
            except Exception as exc:  # e.g. an op that synchronises: serve eagerly rather than fail the step
                self.disable(f"capture of batch size {size} failed: {type(exc).__name__}: {exc}")
                return None
        graph, hidden = entry
        graph.replay()
        return hidden

    def capture_all(self, max_blocks: int) -> None:
        """Capture every size now, largest first (its pool then serves the smaller ones); raises on failure.

        Call it before the first step: the fresh buffers hold only padding rows, so the warm-up forwards
        write no K/V. ``max_blocks`` must be the scheduler's block-table width.
        """
        if self.inputs is None:
            self.inputs = StaticDecodeInputs(self.sizes[-1], max_blocks, self.block_size, self.device)
        for size in reversed(self.sizes):
            if size not in self.graphs:
                self._capture(size)

    def _capture(self, size: int) -> tuple[torch.cuda.CUDAGraph, torch.Tensor]:
        assert self.inputs is not None
        input_ids, positions, attn = self.inputs.views(size)
        # Eager warm-up: JIT-compiles Triton kernels and fills lazy host caches outside the capture.
        self.model.forward(input_ids, positions, attn, self.kv_caches)
        torch.cuda.synchronize(self.device)
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            hidden = self.model.forward(input_ids, positions, attn, self.kv_caches)
        self.graphs[size] = (graph, hidden)
        log.debug("captured a CUDA graph for decode batch size %d", size)
        return graph, hidden

    def disable(self, reason: str) -> None:
        """Stop using graphs (after a failed capture); later steps run eagerly."""
        self.disabled_reason = reason
        self.graphs.clear()
        log.warning("CUDA graphs disabled: %s", reason)
