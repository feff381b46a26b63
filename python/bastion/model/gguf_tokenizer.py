"""Build a ``tokenizers.Tokenizer`` from the ``tokenizer.ggml.*`` metadata of a GGUF file.

Two vocab kinds: byte-level BPE (``gpt2``: SmolLM2, Llama 3, Qwen2; vocab + merges in the file) and
SentencePiece BPE (``llama``: Llama 2, Mistral; vocab + scores, merges implied by the scores, with
byte fallback). The text splitting before BPE depends on the model family (``tokenizer.ggml.pre``);
the regexes are llama.cpp's, which reproduce each family's original ``tokenizer.json``.
"""

from __future__ import annotations

import warnings
from typing import Any

from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers, processors
from tokenizers import Tokenizer as HFTokenizer

from bastion.errors import ModelLoadError

_GPT2_SPLIT = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = _LLAMA3_SPLIT.replace(r"\p{N}{1,3}", r"\p{N}")
# tokenizer.ggml.pre -> the regexes applied in turn (each match isolated) before byte-level BPE
_PRE_SPLITS: dict[str, tuple[str, ...]] = {
    "default": (_GPT2_SPLIT,),
    "gpt-2": (_GPT2_SPLIT,),
    "smollm": (r"\p{N}", _GPT2_SPLIT),  # digits one by one, then GPT-2 splitting
    "starcoder": (r"\p{N}", _GPT2_SPLIT),
    "llama-bpe": (_LLAMA3_SPLIT,),
    "llama3": (_LLAMA3_SPLIT,),
    "qwen2": (_QWEN2_SPLIT,),
}
_CONTROL, _USER_DEFINED, _UNKNOWN = 3, 4, 2  # llama.cpp token types
_SPIECE_SPACE = "\u2581"


def _byte_level_tokenizer(meta: dict[str, Any], tokens: list[str]) -> HFTokenizer:
    merges = [tuple(m.split(" ", 1)) for m in meta.get("tokenizer.ggml.merges", [])]
    vocab = {token: i for i, token in enumerate(tokens)}
    tok = HFTokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
    pre = str(meta.get("tokenizer.ggml.pre", "default"))
    splits = _PRE_SPLITS.get(pre)
    if splits is None:
        warnings.warn(f"GGUF pre-tokenizer {pre!r} is unknown to bastion; using GPT-2 splitting", stacklevel=3)
        splits = _PRE_SPLITS["default"]
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(s), behavior="isolated") for s in splits]
        + [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
    )
    tok.decoder = decoders.ByteLevel()
    return tok


def spm_merges(tokens: list[str], scores: list[float], token_types: list[int]) -> list[tuple[str, str]]:
    """Merges implied by a SentencePiece BPE vocab: a pair merges when the joined piece is a token,
    and pairs whose joined piece scores higher merge first (ties: lower left, then right id)."""
    vocab = {token: i for i, token in enumerate(tokens)}
    ranked: list[tuple[float, int, int, str, str]] = []
    for piece, score, kind in zip(tokens, scores, token_types, strict=True):
        if kind in (_CONTROL, _UNKNOWN):
            continue
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in vocab and right in vocab:
                ranked.append((-score, vocab[left], vocab[right], left, right))
    ranked.sort()
    return [(left, right) for *_, left, right in ranked]


def _sentencepiece_tokenizer(meta: dict[str, Any], tokens: list[str], token_types: list[int]) -> HFTokenizer:
    scores = meta.get("tokenizer.ggml.scores") or [0.0] * len(tokens)
    unk_id = meta.get("tokenizer.ggml.unknown_token_id")
    vocab = {token: i for i, token in enumerate(tokens)}
    bpe = models.BPE(
        vocab=vocab, merges=spm_merges(tokens, scores, token_types),
        unk_token=tokens[unk_id] if unk_id is not None else None, fuse_unk=True, byte_fallback=True,
    )
    tok = HFTokenizer(bpe)
    add_prefix = bool(meta.get("tokenizer.ggml.add_space_prefix", True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(
        replacement=_SPIECE_SPACE, prepend_scheme="first" if add_prefix else "never", split=False
    )
    steps = [decoders.Replace(_SPIECE_SPACE, " "), decoders.ByteFallback(), decoders.Fuse()]
    if add_prefix:
        steps.append(decoders.Strip(content=" ", left=1, right=0))
    tok.decoder = decoders.Sequence(steps)
    return tok


def _add_special_tokens(tok: HFTokenizer, tokens: list[str], token_types: list[int]) -> None:
    """Control tokens become special added tokens, user-defined ones plain added tokens (kept whole)."""
    special = [AddedToken(t, special=True, normalized=False) for t, k in zip(tokens, token_types, strict=True) if k == _CONTROL]
    plain = [AddedToken(t, special=False, normalized=False) for t, k in zip(tokens, token_types, strict=True) if k == _USER_DEFINED]
    if special:
        tok.add_special_tokens(special)
    if plain:
        tok.add_tokens(plain)


def _bos_post_processor(tok: HFTokenizer, bos: str, bos_id: int, byte_level: bool) -> None:
    template = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                             special_tokens=[(bos, bos_id)])
    tok.post_processor = (
        processors.Sequence([processors.ByteLevel(trim_offsets=False), template]) if byte_level else template
    )


def tokenizer_from_gguf(meta: dict[str, Any]) -> HFTokenizer:
    """The ``tokenizers.Tokenizer`` described by GGUF metadata; ModelLoadError if it cannot be built."""
    tokens = meta.get("tokenizer.ggml.tokens")
    if not tokens:
        raise ModelLoadError("GGUF file has no tokenizer (tokenizer.ggml.tokens is missing)")
    token_types = list(meta.get("tokenizer.ggml.token_type") or [1] * len(tokens))
    kind = meta.get("tokenizer.ggml.model")
    if kind == "gpt2":
        tok = _byte_level_tokenizer(meta, tokens)
    elif kind == "llama":
        tok = _sentencepiece_tokenizer(meta, tokens, token_types)
    else:
        raise ModelLoadError(f"unsupported GGUF tokenizer model {kind!r} (supported: gpt2, llama)")
    _add_special_tokens(tok, tokens, token_types)
    bos_id = meta.get("tokenizer.ggml.bos_token_id")
    # llama.cpp adds BOS to SentencePiece vocabs unless the file says otherwise
    add_bos = bool(meta.get("tokenizer.ggml.add_bos_token", kind == "llama"))
    if add_bos and bos_id is not None:
        _bos_post_processor(tok, tokens[bos_id], int(bos_id), byte_level=kind == "gpt2")
    return tok
