"""CUDA graphs for decode: bucketing and padding on the CPU; graph replay vs eager logits on a GPU."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from bastion.config import EngineConfig
from bastion.engine.cuda_graphs import (
    PAD_SEQ_LEN,
    PAD_SLOT,
    CudaGraphRunner,
    DecodeBatchArrays,
    StaticDecodeInputs,
    capture_sizes,
    choose_capture_size,
    graph_blockers,
    is_pure_decode,
    pad_decode_batch,
)
from bastion.engine.model_runner import ModelRunner
from bastion.model import AttentionMetadata, LlamaForCausalLM, ModelConfig

BLOCK_SIZE = 4
MAX_BLOCKS = 8  # per sequence: contexts up to 32 tokens


# ----- pure functions ------------------------------------------------------------------------------

@pytest.mark.parametrize(("max_num_seqs", "expected"), [
    (1, (1,)), (5, (1, 2, 4, 5)), (16, (1, 2, 4, 8, 16)), (20, (1, 2, 4, 8, 16, 20)),
    (64, (1, 2, 4, 8, 16, 32, 48, 64)),
])
def test_capture_sizes_ladder(max_num_seqs: int, expected: tuple[int, ...]) -> None:
    assert capture_sizes(max_num_seqs) == expected


def test_capture_sizes_cover_every_batch_with_bounded_padding() -> None:
    sizes = capture_sizes(256)
    assert sizes == tuple(sorted(set(sizes))) and sizes[-1] == 256
    for n in range(1, 257):
        size = choose_capture_size(n, sizes)
        assert size is not None and n <= size <= max(2 * n - 1, n + 15)


def test_capture_sizes_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        capture_sizes(0)
    with pytest.raises(ValueError):
        capture_sizes(8, step=0)


def test_choose_capture_size() -> None:
    sizes = (1, 2, 4, 8, 16)
    assert [choose_capture_size(n, sizes) for n in (1, 2, 3, 4, 5, 9, 16)] == [1, 2, 4, 4, 8, 16, 16]
    assert choose_capture_size(17, sizes) is None  # above the largest: run eagerly
    assert choose_capture_size(0, sizes) is None


def test_is_pure_decode() -> None:
    assert is_pure_decode(np.array([1, 1, 1], np.int32))
    assert not is_pure_decode(np.array([1, 5, 1], np.int32))  # a prefill chunk in the batch
    assert not is_pure_decode(np.array([], np.int32))


def _decode_arrays(num_seqs: int) -> dict[str, np.ndarray]:
    table = np.zeros((num_seqs, MAX_BLOCKS), np.int32)
    table[:, :2] = np.arange(1, 2 * num_seqs + 1, dtype=np.int32).reshape(num_seqs, 2)
    return {
        "input_ids": np.arange(10, 10 + num_seqs, dtype=np.int32),
        "positions": np.full(num_seqs, 6, np.int64),
        "slot_mapping": table[:, 1].astype(np.int64) * BLOCK_SIZE + 2,
        "block_table": table,
        "seq_lens": np.full(num_seqs, 7, np.int32),
    }


def test_pad_decode_batch_makes_padded_rows_inert() -> None:
    arrays = _decode_arrays(3)
    out = pad_decode_batch(**arrays, size=4)
    assert out.input_ids.tolist() == [10, 11, 12, 0]
    assert out.positions.tolist() == [6, 6, 6, 0]
    assert out.slot_mapping[:3].tolist() == arrays["slot_mapping"].tolist()
    assert out.slot_mapping[3] == PAD_SLOT == -1  # the KV write skips it
    assert out.seq_lens.tolist() == [7, 7, 7, PAD_SEQ_LEN]
    assert np.array_equal(out.block_table[:3], arrays["block_table"])
    assert not out.block_table[3].any()
    assert out.cu_seqlens_q.tolist() == [0, 1, 2, 3, 4]
    assert out.input_ids.dtype == np.int64 and out.block_table.dtype == np.int32


def test_pad_decode_batch_reuses_larger_buffers_and_clears_stale_rows() -> None:
    buffers = DecodeBatchArrays.allocate(8, MAX_BLOCKS + 2)
    pad_decode_batch(**_decode_arrays(8), size=8, out=buffers)
    buffers.block_table[:, MAX_BLOCKS:] = 99  # stale columns past the step's block-table width
    pad_decode_batch(**_decode_arrays(2), size=4, out=buffers)
    assert buffers.slot_mapping[2:4].tolist() == [PAD_SLOT, PAD_SLOT]
    assert not buffers.block_table[2:4].any() and not buffers.block_table[:4, MAX_BLOCKS:].any()
    assert buffers.cu_seqlens_q[:5].tolist() == [0, 1, 2, 3, 4]
    assert buffers.input_ids[4:].tolist() == [14, 15, 16, 17]  # rows past ``size`` are left alone


def test_pad_decode_batch_rejects_batches_that_do_not_fit() -> None:
    with pytest.raises(ValueError):
        pad_decode_batch(**_decode_arrays(5), size=4)
    with pytest.raises(ValueError):
        pad_decode_batch(**_decode_arrays(2), size=4, out=DecodeBatchArrays.allocate(4, MAX_BLOCKS - 1))


def test_graph_blockers_name_the_torch_reference_ops() -> None:
    # float64 CPU tensors resolve to the torch reference, whose attention reads seq_lens on the host
    blockers = " ".join(graph_blockers(torch.empty(0, dtype=torch.float64)))
    assert "paged_attention" in blockers and "reshape_and_cache" in blockers


def test_graph_blockers_see_a_fallback_behind_a_partial_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under "auto" a partial backend (CUDA decode attention) hands the calls it declines to the next
    backend; if that one is the torch reference, capture would fail on it, so the op is a blocker."""
    from bastion.ops import dispatch, torch_ref

    def capturable(*args: object, **kwargs: object) -> None:
        raise dispatch.Unsupported("declined")

    chained = dispatch._first_that_serves([capturable, torch_ref.paged_attention])
    assert dispatch.candidates(chained) == (capturable, torch_ref.paged_attention)
    resolve = dispatch.resolve
    monkeypatch.setattr(dispatch, "resolve",
                        lambda op, backend, t: chained if op == "paged_attention" else resolve(op, backend, t))
    probe = torch.empty(0, dtype=torch.float32)  # CPU fp32: every other op resolves to a capturable-looking backend
    blockers = graph_blockers(probe)
    assert any(b.startswith("paged_attention (bastion.ops.torch_ref") for b in blockers), blockers


# ----- a tiny random model and hand-built scheduler steps --------------------------------------------

def tiny_model(device: str, dtype: torch.dtype) -> LlamaForCausalLM:
    """Random 2-layer GQA Llama; head_dim 64 so the CUDA kernels accept it too."""
    config = ModelConfig(architecture="llama", vocab_size=96, hidden_size=128, intermediate_size=192, num_layers=2,
                         num_heads=4, num_kv_heads=2, head_dim=64, max_position_embeddings=64)
    with torch.device("meta"):
        shapes = {name: t.shape for name, t in LlamaForCausalLM(config).state_dict().items()}
    gen = torch.Generator().manual_seed(0)
    weights = {name: torch.randn(shape, generator=gen) * 0.2 for name, shape in shapes.items()}
    return LlamaForCausalLM.from_state_dict(config, weights, device=device, dtype=dtype)


def make_step(tokens: list[list[int]], starts: list[int], seq_ids: list[int] | None = None) -> SimpleNamespace:
    """A scheduler step (docs/ARCHITECTURE.md); sequence ``seq_ids[i]`` (default i) owns blocks ``id*MAX_BLOCKS + j``."""
    seq_ids = list(range(len(tokens))) if seq_ids is None else seq_ids
    num = np.array([len(t) for t in tokens], np.int32)
    seq_lens = np.array(starts, np.int32) + num
    table = np.zeros((len(tokens), MAX_BLOCKS), np.int32)
    positions, slots = [], []
    for i, (toks, start) in enumerate(zip(tokens, starts)):
        used = -(-int(seq_lens[i]) // BLOCK_SIZE)
        table[i, :used] = seq_ids[i] * MAX_BLOCKS + np.arange(used)
        for pos in range(start, start + len(toks)):
            positions.append(pos)
            slots.append(int(table[i, pos // BLOCK_SIZE]) * BLOCK_SIZE + pos % BLOCK_SIZE)
    cu = np.concatenate([[0], np.cumsum(num)]).astype(np.int32)
    return SimpleNamespace(
        req_ids=np.arange(len(tokens), dtype=np.int64), num_scheduled_tokens=num,
        input_ids=np.array([t for toks in tokens for t in toks], np.int32), positions=np.array(positions, np.int64),
        slot_mapping=np.array(slots, np.int64), cu_seqlens_q=cu, seq_lens=seq_lens, block_table=table,
        logits_indices=(cu[1:] - 1).astype(np.int64),
    )


def eager_hidden(model: LlamaForCausalLM, step: SimpleNamespace, kv_caches: list) -> torch.Tensor:
    """The unpadded forward of ``step``, as ``ModelRunner`` runs it eagerly."""
    dev = model.device
    attn = AttentionMetadata(
        slot_mapping=torch.from_numpy(step.slot_mapping).to(dev), block_table=torch.from_numpy(step.block_table).to(dev),
        seq_lens=torch.from_numpy(step.seq_lens).to(dev), cu_seqlens_q=torch.from_numpy(step.cu_seqlens_q).to(dev),
        max_seqlen_q=int(step.num_scheduled_tokens.max()), max_seq_len=int(step.seq_lens.max()),
    )
    ids = torch.from_numpy(step.input_ids).long().to(dev)
    return model.forward(ids, torch.from_numpy(step.positions).to(dev), attn, kv_caches)


def prefilled(model: LlamaForCausalLM, lengths: list[int], seed: int = 1) -> tuple[list, list[int]]:
    """KV caches after an eager prefill of random prompts of ``lengths``; returns (caches, next tokens).

    The prompts go in one token per sequence per step: decode-shaped steps work on every backend
    (the cuda backend's attention is decode-only).
    """
    rng = np.random.default_rng(seed)
    caches = model.make_kv_caches(len(lengths) * MAX_BLOCKS, BLOCK_SIZE)
    prompts = [rng.integers(0, model.config.vocab_size, n).tolist() for n in lengths]
    for pos in range(max(lengths)):
        ids = [i for i, n in enumerate(lengths) if n > pos]
        eager_hidden(model, make_step([[prompts[i][pos]] for i in ids], [pos] * len(ids), ids), caches)
    return caches, rng.integers(0, model.config.vocab_size, len(lengths)).tolist()


def clone_caches(caches: list) -> list:
    return [(k.clone(), v.clone()) for k, v in caches]


# ----- padding through the real model on the CPU -------------------------------------------------------

@pytest.mark.parametrize("size", [4, 8])
def test_padded_decode_forward_matches_eager_and_pads_write_nothing(size: int) -> None:
    model = tiny_model("cpu", torch.float32)
    lengths = [5, 9, 2]
    caches, next_tokens = prefilled(model, lengths)
    step = make_step([[t] for t in next_tokens], lengths)
    eager_caches, padded_caches = clone_caches(caches), clone_caches(caches)
    expected = eager_hidden(model, step, eager_caches)

    inputs = StaticDecodeInputs(8, MAX_BLOCKS, BLOCK_SIZE, torch.device("cpu"))
    inputs.load(step, size)
    input_ids, positions, attn = inputs.views(size)
    hidden = model.forward(input_ids, positions, attn, padded_caches)

    assert hidden.shape[0] == size and torch.isfinite(hidden).all()  # padded rows read nothing harmful
    torch.testing.assert_close(hidden[: len(lengths)], expected, rtol=1e-5, atol=1e-5)
    real = torch.from_numpy(step.slot_mapping)
    others = torch.ones(eager_caches[0][0].shape[0] * BLOCK_SIZE, dtype=torch.bool)
    others[real] = False
    for eager_cache, padded_cache in zip(eager_caches, padded_caches):
        for c0, c1 in zip(eager_cache, padded_cache):
            flat0, flat1 = c0.flatten(0, 1), c1.flatten(0, 1)
            assert torch.equal(flat0[others], flat1[others])  # padded rows wrote no K/V anywhere
            # the real rows' K/V: same up to GEMM rounding (a 4-row matmul may block differently from 3)
            torch.testing.assert_close(flat0[real], flat1[real], rtol=1e-5, atol=1e-5)


def test_model_runner_stays_eager_off_cuda_or_without_config() -> None:
    loaded = SimpleNamespace(model=tiny_model("cpu", torch.float32))
    assert ModelRunner(loaded, 4, BLOCK_SIZE, torch.device("cpu"), config=EngineConfig()).graphs is None
    assert ModelRunner(loaded, 4, BLOCK_SIZE, torch.device("cpu")).graphs is None
    with pytest.raises(ValueError, match="CUDA device"):
        CudaGraphRunner(loaded.model, [], 4, torch.device("cpu"))


def _cpu_backed_graph_runner(model: LlamaForCausalLM, kv_caches: list, max_num_seqs: int) -> CudaGraphRunner:
    """A runner whose CUDA-only parts are bypassed: static inputs on the CPU, capture to be faked."""
    runner = CudaGraphRunner(model, kv_caches, max_num_seqs, torch.device("cuda"))  # touches no CUDA API
    runner.inputs = StaticDecodeInputs(runner.sizes[-1], MAX_BLOCKS, BLOCK_SIZE, torch.device("cpu"))
    return runner


def test_graph_runner_captures_each_size_once_and_replays_every_step(monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny_model("cpu", torch.float32)
    runner = _cpu_backed_graph_runner(model, model.make_kv_caches(4 * MAX_BLOCKS, BLOCK_SIZE), 4)
    replays: list[int] = []
    captured: list[int] = []

    def fake_capture(size: int) -> tuple[SimpleNamespace, torch.Tensor]:
        captured.append(size)
        hidden = torch.full((size, 1), float(size))
        entry = (SimpleNamespace(replay=lambda: replays.append(size)), hidden)
        runner.graphs[size] = entry
        return entry

    monkeypatch.setattr(runner, "_capture", fake_capture)
    for n in (3, 3, 1, 4):
        hidden = runner.run(make_step([[1]] * n, [2] * n))
        assert hidden is not None and hidden.shape[0] == choose_capture_size(n, runner.sizes)
    assert captured == [4, 1] and replays == [4, 4, 1, 4]
    assert runner.inputs.host.slot_mapping[3] == 3 * MAX_BLOCKS * BLOCK_SIZE + 2  # the last step's own rows


def test_failed_capture_disables_graphs_and_the_step_runs_eagerly(monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny_model("cpu", torch.float32)
    lengths = [4, 6]
    caches, tokens = prefilled(model, lengths)
    step = make_step([[t] for t in tokens], lengths)
    loaded = SimpleNamespace(model=model)
    runner, reference = (ModelRunner(loaded, caches[0][0].shape[0], BLOCK_SIZE, torch.device("cpu")) for _ in "ab")
    for r in (runner, reference):
        r.kv_caches = clone_caches(caches)
    runner.graphs = _cpu_backed_graph_runner(model, runner.kv_caches, 4)

    def broken_capture(size: int) -> None:
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(runner.graphs, "_capture", broken_capture)
    assert runner.graphs.can_run(step)
    torch.testing.assert_close(runner.execute(step), reference.execute(step))
    assert "stream is capturing" in runner.graphs.disabled_reason and not runner.graphs.can_run(step)


# ----- graph replay on a GPU -----------------------------------------------------------------------

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA GPU; none visible")


@requires_cuda
@pytest.mark.parametrize("num_seqs", [1, 3, 8])
def test_graph_replay_matches_eager_logits_over_several_steps(num_seqs: int) -> None:
    model = tiny_model("cuda", torch.bfloat16)
    blockers = graph_blockers(model.make_kv_caches(1, BLOCK_SIZE)[0][0])
    if blockers:
        pytest.skip(f"no capturable CUDA backend for {', '.join(blockers)} (build with BASTION_CUDA=ON or install triton)")
    lengths = [3 + 2 * i for i in range(num_seqs)]
    caches, tokens = prefilled(model, lengths)
    loaded = SimpleNamespace(model=model)
    num_blocks = caches[0][0].shape[0]
    graphed = ModelRunner(loaded, num_blocks, BLOCK_SIZE, torch.device("cuda"), config=EngineConfig(max_num_seqs=8))
    eager = ModelRunner(loaded, num_blocks, BLOCK_SIZE, torch.device("cuda"), config=EngineConfig(enforce_eager=True))
    assert graphed.graphs is not None and eager.graphs is None
    for runner in (graphed, eager):  # in place: the graph runner captured these very cache tensors
        for (k, v), (k0, v0) in zip(runner.kv_caches, caches):
            k.copy_(k0)
            v.copy_(v0)

    for _ in range(3):  # replays after the capture must read each new step's inputs, not the captured ones
        step = make_step([[t] for t in tokens], lengths)
        assert graphed.graphs.can_run(step)
        logits = graphed.execute(step)
        expected = eager.execute(step)
        torch.testing.assert_close(logits, expected, rtol=2e-2, atol=2e-2)
        tokens = expected.argmax(-1).tolist()
        lengths = [n + 1 for n in lengths]
    assert set(graphed.graphs.graphs) == {choose_capture_size(num_seqs, graphed.graphs.sizes)}
    assert graphed.graphs.disabled_reason is None


@requires_cuda
def test_prefill_and_oversized_steps_run_eagerly() -> None:
    model = tiny_model("cuda", torch.bfloat16)
    if graph_blockers(model.make_kv_caches(1, BLOCK_SIZE)[0][0]):
        pytest.skip("no capturable CUDA backend for the attention ops")
    runner = CudaGraphRunner(model, model.make_kv_caches(8 * MAX_BLOCKS, BLOCK_SIZE), 2, torch.device("cuda"))
    assert not runner.can_run(make_step([[1, 2, 3], [4]], [0, 5]))  # a prefill chunk: eager
    assert not runner.can_run(make_step([[1], [2], [3]], [2, 2, 2]))  # 3 > max_num_seqs 2: eager
    assert runner.can_run(make_step([[1], [2]], [2, 2]))
