"""``SamplingParams``: how one request is sampled and when it stops (vLLM's names and defaults).

Every value is checked at construction (and again by ``dataclasses.replace``), so a bad request fails
with a ``ValueError`` naming the field before anything is queued. The object is frozen: the sampler
and the stop checker read it every step and must not see it change under them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, cast

from bastion.sampling._checks import check_bool, check_float, check_int, check_stop_strings, check_token_ids
from bastion.sampling.structured_params import StructuredOutputsParams

OutputKind = Literal["cumulative", "delta", "final_only"]
OUTPUT_KINDS: tuple[str, ...] = ("cumulative", "delta", "final_only")

# vLLM's rule: a temperature this small means greedy (dividing by it would overflow the logits)
GREEDY_TEMPERATURE = 1e-5
MAX_LOGPROBS = 20
_PENALTY_RANGE = 2.0  # presence/frequency penalties live in [-2, 2], as in vLLM and OpenAI
# torch.Generator.manual_seed accepts this range
_SEED_MIN, _SEED_MAX = -(2**63), 2**64 - 1


@dataclass(frozen=True)
class SamplingParams:
    """Sampling and stopping parameters of one request.

    Attributes (vLLM semantics):
        n: completions per prompt; only 1 is supported.
        max_tokens: most tokens to generate (>= 1); reaching it finishes with "length".
        temperature: >= 0; below 1e-5 the request is greedy (exact argmax).
        top_k: keep the k most likely tokens; 0 or -1 disables (stored as 0).
        top_p: nucleus mass in (0, 1]; 1 disables.
        min_p: drop tokens whose probability is below ``min_p`` times the top one; 0 disables.
        repetition_penalty: > 0; HF semantics over prompt and output tokens; 1 disables.
        presence_penalty, frequency_penalty: in [-2, 2]; over output tokens; 0 disables.
        seed: makes this request's draws reproducible whatever else is in the batch.
        stop: strings that end generation; excluded from the text unless include_stop_str_in_output.
        stop_token_ids: token ids that end generation (in addition to eos).
        ignore_eos: keep generating past the eos token.
        min_tokens: eos and stop_token_ids are masked until this many tokens exist (<= max_tokens).
        logprobs: number of top logprobs returned per generated token (0..20), or None for none.
        skip_special_tokens: leave special tokens out of the detokenized text.
        output_kind: "cumulative", "delta" or "final_only" (vLLM's RequestOutputKind).
        structured_outputs: a JSON schema, regex, choice or grammar the output must match
            (``StructuredOutputsParams``, or a dict of its fields); enforced token by token.
    """

    n: int = 1
    max_tokens: int = 16
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    stop: str | list[str] | tuple[str, ...] | None = ()
    stop_token_ids: list[int] | tuple[int, ...] | None = ()
    include_stop_str_in_output: bool = False
    ignore_eos: bool = False
    min_tokens: int = 0
    logprobs: int | None = None
    skip_special_tokens: bool = True
    output_kind: OutputKind = "cumulative"
    structured_outputs: StructuredOutputsParams | None = None

    def __post_init__(self) -> None:
        """Validate every field and normalise ``stop``/``stop_token_ids`` to tuples, ``top_k=-1`` to 0 and a
        ``structured_outputs`` dict to ``StructuredOutputsParams``."""
        self.validate()

    def validate(self) -> None:
        """Check every field; raise ``ValueError`` naming the first bad one."""
        check_int("n", self.n)
        if self.n != 1:
            raise ValueError(f"n must be 1 (one completion per request is supported), got {self.n}")
        check_int("max_tokens", self.max_tokens, low=1)
        check_float("temperature", self.temperature, low=0.0)
        check_int("top_k", self.top_k, low=-1)
        check_float("top_p", self.top_p, low=0.0, high=1.0, low_open=True)
        check_float("min_p", self.min_p, low=0.0, high=1.0)
        check_float("repetition_penalty", self.repetition_penalty, low=0.0, low_open=True)
        check_float("presence_penalty", self.presence_penalty, low=-_PENALTY_RANGE, high=_PENALTY_RANGE)
        check_float("frequency_penalty", self.frequency_penalty, low=-_PENALTY_RANGE, high=_PENALTY_RANGE)
        if self.seed is not None:
            check_int("seed", self.seed, low=_SEED_MIN, high=_SEED_MAX)
        check_bool("include_stop_str_in_output", self.include_stop_str_in_output)
        check_bool("ignore_eos", self.ignore_eos)
        check_bool("skip_special_tokens", self.skip_special_tokens)
        check_int("min_tokens", self.min_tokens, low=0, high=self.max_tokens)
        if self.logprobs is not None:
            check_int("logprobs", self.logprobs, low=0, high=MAX_LOGPROBS)
        if self.output_kind not in OUTPUT_KINDS:
            raise ValueError(f"output_kind must be one of {', '.join(OUTPUT_KINDS)}, got {self.output_kind!r}")
        # normalised forms: frozen, so assign through object.__setattr__
        object.__setattr__(self, "structured_outputs", StructuredOutputsParams.coerce(self.structured_outputs))
        object.__setattr__(self, "stop", check_stop_strings("stop", self.stop))
        object.__setattr__(self, "stop_token_ids", check_token_ids("stop_token_ids", self.stop_token_ids))
        if self.top_k == -1:
            object.__setattr__(self, "top_k", 0)

    def validate_against(self, vocab_size: int) -> None:
        """Raise ``ValueError`` if a ``stop_token_ids`` entry is outside a vocabulary of ``vocab_size``."""
        check_int("vocab_size", vocab_size, low=1)
        ids = cast(tuple[int, ...], self.stop_token_ids)  # normalised by validate()
        bad = [token for token in ids if token >= vocab_size]
        if bad:
            raise ValueError(f"stop_token_ids {bad} are outside the vocabulary (size {vocab_size})")

    @property
    def is_greedy(self) -> bool:
        """True when the request takes the exact argmax at every step."""
        return self.temperature < GREEDY_TEMPERATURE

    @property
    def has_penalties(self) -> bool:
        """True when any of repetition/presence/frequency penalty changes the logits."""
        return self.repetition_penalty != 1.0 or self.presence_penalty != 0.0 or self.frequency_penalty != 0.0
