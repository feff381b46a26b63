"""The GGUF block model (weights left in the file) against the dequantized model of the same file.

Logits of a prefill and of decode steps, through the modules, for the real SmolLM2 and tiny random
GGUFs of each architecture and type mix. The block model differs from the dequantized one only in
summation order (exact mode) or in int16-rounded activations of the small steps (the default).
"""

from __future__ import annotations

import gguf
import numpy as np
import pytest
import torch
from bastion.errors import ModelLoadError
from bastion.model import load_model
from bastion.model.quant_linear import QuantizedLinear, configure

from ..helpers.gguf_builder import write_llama_gguf
from ..helpers.tiny_models import tiny_model
from .model_helpers import PagedSequences

T = gguf.GGMLQuantizationType


def _logits(model: torch.nn.Module, ids: list[int]) -> torch.Tensor:
    """A 12-token prefill (panels) then 4 one-token decodes (block kernel), logits stacked."""
    seqs = PagedSequences(model, max_len=len(ids) + 1, block_size=4)
    return torch.cat([seqs.step({0: ids[:12]})] + [seqs.step({0: [t]}) for t in ids[12:16]])


def _relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    return float((got - expected).norm() / expected.norm())


@pytest.mark.parametrize("bits", [32, 16])
def test_smollm2_block_model_matches_its_dequantized_model(smollm2_path, bits: int) -> None:
    blocks, dense = load_model(smollm2_path), load_model(smollm2_path, dequantize=True)
    configure(blocks.model, activation_bits=bits)
    ids = blocks.tokenizer.encode("The capital of France is Paris, the capital of Italy is Rome, and the capital "
                                  "of Spain is Madrid.")
    assert len(ids) >= 16
    got, expected = _logits(blocks.model, ids), _logits(dense.model, ids)
    error = _relative_error(got, expected)
    print(f"SmolLM2 activation_bits={bits}: relative logit error {error:.1e}")
    assert error < (1e-5 if bits == 32 else 1e-3)  # measured 7.0e-7 and 5.6e-5
    assert torch.equal(got.argmax(-1), expected.argmax(-1))


@pytest.mark.parametrize(("kind", "arch", "qtype_of"), [
    ("llama", "llama", lambda n: T.Q4_0),
    ("llama3", "llama", lambda n: T.Q5_K if ".mlp." in n else T.Q8_0),
    ("qwen2", "qwen2", lambda n: T.Q3_K if ".mlp." in n else T.Q5_1),
    ("mistral", "llama", lambda n: T.Q2_K if "down_proj" in n else T.Q4_1),
    ("llama", "llama", lambda n: T.F16),
    ("qwen2", "qwen2", lambda n: T.BF16),
])
def test_tiny_block_models_match_their_dequantized_models(tmp_path, kind: str, arch: str, qtype_of) -> None:
    """Each architecture (llama q/k permuted in the file, llama3 rope scaling, qwen2 QKV bias, mistral
    sliding window) in a type mix; exact mode, so only summation order separates the two."""
    reference = tiny_model(kind, seed=2)
    dims = {"hidden": reference.config.hidden_size, "inter": reference.config.intermediate_size}

    def pick(name: str) -> T:  # K-quant rows need 256 columns: the tiny model's hidden size is 64
        chosen = qtype_of(name)
        cols = dims["inter"] if "down_proj" in name else dims["hidden"]
        return chosen if cols % gguf.GGML_QUANT_SIZES[chosen][0] == 0 else T.Q8_0

    path = write_llama_gguf(tmp_path / f"{kind}.gguf", reference, arch=arch, qtype_of=pick)
    blocks, dense = load_model(path), load_model(path, dequantize=True)
    assert isinstance(blocks.model.layers[0].mlp.gate_up_proj, QuantizedLinear)
    ids = torch.randint(3, 300, (16,), generator=torch.Generator().manual_seed(4)).tolist()
    error = _relative_error(_logits(blocks.model, ids), _logits(dense.model, ids))
    assert error < 1e-5, error


def test_types_bastion_does_not_run_are_refused_naming_the_tensor(tmp_path) -> None:
    path = write_llama_gguf(tmp_path / "tiny.gguf", tiny_model("qwen2"), arch="qwen2", qtype=T.Q8_0)
    reader = gguf.GGUFReader(path)
    writer = gguf.GGUFWriter(str(tmp_path / "iq.gguf"), "qwen2")
    for field in reader.fields.values():  # the metadata as it was
        if not field.name.startswith("GGUF.") and field.name != "general.architecture":
            writer.add_key_value(field.name, field.contents(), field.types[0],
                                 field.types[-1] if field.types[0] == gguf.GGUFValueType.ARRAY else None)
    for tensor in reader.tensors:
        data, qtype = np.asarray(tensor.data), tensor.tensor_type
        if tensor.name == "blk.1.ffn_up.weight":  # IQ4_NL: 32 weights in 18 bytes, like Q4_0
            data, qtype = np.zeros((data.shape[0], data.shape[1] // 34 * 18), dtype=np.uint8), T.IQ4_NL
        writer.add_tensor(tensor.name, data, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ModelLoadError, match=r"tensor 'blk.1.ffn_up.weight' has GGUF type IQ4_NL"):
        load_model(tmp_path / "iq.gguf")
