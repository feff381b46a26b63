"""StopChecker: stop strings across token boundaries, stop ids, eos, min/max tokens, streaming hold-back."""

from __future__ import annotations

import pytest
from bastion.engine.output_processor import IncrementalDetokenizer, StopChecker, StopDecision
from bastion.sampling.params import SamplingParams
from hypothesis import given, settings
from hypothesis import strategies as st

EOS = 0
# a toy vocabulary whose decode is plain concatenation, so token boundaries are exactly controlled
TOY = ["<eos>", "xx S", "TO", "P yy", "ST", "ay", "abSTOPcd", "z", "<sep>"]
T = {text: i for i, text in enumerate(TOY)}


def toy_decode(ids: list[int]) -> str:
    return "".join(TOY[i] for i in ids)


def run(params: SamplingParams, tokens: list[str | int], decode=toy_decode) -> tuple[list[str], StopDecision, StopChecker]:
    """Feed tokens (toy strings or raw ids) until the checker finishes; return pieces, last decision, checker."""
    checker = StopChecker(params, IncrementalDetokenizer(decode), eos_token_ids=[EOS])
    pieces: list[str] = []
    decision = StopDecision("")
    for token in tokens:
        decision = checker.process(T[token] if isinstance(token, str) else token)
        pieces.append(decision.text)
        if decision.finished:
            break
    return pieces, decision, checker


def test_stop_string_split_across_tokens_is_cut_and_held_back() -> None:
    pieces, decision, checker = run(SamplingParams(stop="STOP"), ["xx S", "TO", "P yy", "z"])
    assert pieces == ["xx ", "", ""]  # "S" then "STO" held back while they may start "STOP"
    assert (decision.finish_reason, decision.stop_reason) == ("stop", "STOP")
    assert checker.text == "xx " and checker.finished


def test_include_stop_str_in_output() -> None:
    pieces, decision, checker = run(SamplingParams(stop="STOP", include_stop_str_in_output=True),
                                    ["xx S", "TO", "P yy"])
    assert checker.text == "xx STOP" == "".join(pieces)
    assert decision.stop_reason == "STOP"


def test_held_back_text_is_released_when_it_is_not_a_stop() -> None:
    pieces, decision, _ = run(SamplingParams(stop="STOP"), ["ST", "ay", "z"])
    assert pieces == ["", "STay", "z"]
    assert not decision.finished


def test_stop_inside_one_token_drops_the_rest_of_the_token() -> None:
    _, decision, checker = run(SamplingParams(stop=["cd", "STOP"]), ["abSTOPcd"])
    assert checker.text == "ab" and decision.stop_reason == "STOP"  # the earliest occurrence wins


def test_eos_stops_without_its_text_and_without_stop_reason() -> None:
    pieces, decision, checker = run(SamplingParams(), ["z", "<eos>", "z"])
    assert (decision.finish_reason, decision.stop_reason) == ("stop", None)
    assert checker.text == "z" and checker.num_tokens == 2
    _, _, with_text = run(SamplingParams(include_stop_str_in_output=True), ["z", "<eos>"])
    assert with_text.text == "z<eos>"


def test_stop_token_ids_give_the_id_as_stop_reason() -> None:
    _, decision, checker = run(SamplingParams(stop_token_ids=[T["<sep>"]]), ["z", "<sep>"])
    assert (decision.finish_reason, decision.stop_reason) == ("stop", T["<sep>"])
    assert checker.text == "z"


def test_ignore_eos_keeps_going_until_length() -> None:
    pieces, decision, checker = run(SamplingParams(ignore_eos=True, max_tokens=3), ["<eos>", "z", "z"])
    assert (decision.finish_reason, decision.stop_reason) == ("length", None)
    assert checker.text == "<eos>zz" == "".join(pieces)


def test_min_tokens_defers_eos_stop_ids_and_stop_strings() -> None:
    params = SamplingParams(min_tokens=3, stop=["yy"], stop_token_ids=[T["<sep>"]])
    pieces, decision, checker = run(params, ["<eos>", "P yy", "<sep>", "z"])
    # "yy" before min_tokens does not stop; its last "y" is held (it may start "yy") until the stop id
    assert pieces == ["<eos>", "P y", "y"] and decision.stop_reason == T["<sep>"]
    assert checker.text == "<eos>P yy"
    _, late_string, checker = run(params, ["z", "z", "P yy"])
    assert late_string.stop_reason == "yy" and checker.text == "zzP "


def test_max_tokens_gives_length_and_releases_held_text() -> None:
    pieces, decision, checker = run(SamplingParams(stop="STOP", max_tokens=2), ["z", "xx S"])
    assert (decision.finish_reason, decision.stop_reason) == ("length", None)
    assert pieces == ["z", "xx S"] and checker.text == "zxx S"


def test_finished_checker_refuses_more_tokens() -> None:
    _, _, checker = run(SamplingParams(max_tokens=1), ["z"])
    with pytest.raises(ValueError, match="already finished"):
        checker.process(T["z"])


def test_stop_strings_need_a_detokenizer() -> None:
    with pytest.raises(ValueError, match="detokenizer"):
        StopChecker(SamplingParams(stop="x"), None)
    checker = StopChecker(SamplingParams(max_tokens=2), None, eos_token_ids=[EOS])
    assert checker.process(5) == StopDecision("")
    assert checker.process(EOS) == StopDecision("", "stop", None)


def test_multibyte_stop_string_with_the_real_tokenizer(smollm2_tokenizer) -> None:
    ids = smollm2_tokenizer.encode("Party time 🎉 and more text after")
    params = SamplingParams(stop="🎉", max_tokens=64)
    pieces, decision, checker = run(params, ids, decode=smollm2_tokenizer.decode)
    assert (decision.finish_reason, decision.stop_reason) == ("stop", "🎉")
    assert checker.text == "Party time " == "".join(pieces)


def test_stop_word_across_real_tokens(smollm2_tokenizer) -> None:
    ids = smollm2_tokenizer.encode("Answer: 42.\nUser: next question")
    pieces, decision, checker = run(SamplingParams(stop="\nUser:", max_tokens=64), ids,
                                    decode=smollm2_tokenizer.decode)
    assert decision.stop_reason == "\nUser:" and checker.text == "Answer: 42." == "".join(pieces)


def _reference_stop(parts: list[str], stops: list[str]) -> str:
    """Final text: cut at the earliest stop occurrence in the first prefix (by tokens) that holds one."""
    text = ""
    for part in parts:
        text += part
        found = [text.find(s) for s in stops if s in text]
        if found:
            return text[: min(found)]
    return text


@settings(max_examples=150, deadline=None)
@given(
    parts=st.lists(st.text(alphabet="abc", min_size=1, max_size=4), min_size=1, max_size=12),
    stops=st.lists(st.text(alphabet="abc", min_size=1, max_size=3), min_size=1, max_size=3),
)
def test_streaming_never_releases_text_that_is_later_cut(parts: list[str], stops: list[str]) -> None:
    params = SamplingParams(stop=stops, max_tokens=len(parts))
    checker = StopChecker(params, IncrementalDetokenizer(lambda ids: "".join(parts[i] for i in ids)))
    streamed = ""
    for i in range(len(parts)):
        decision = checker.process(i)
        streamed += decision.text
        assert _reference_stop(parts, stops).startswith(streamed)
        if decision.finished:
            break
    assert streamed == checker.text == _reference_stop(parts, stops)
    assert decision.finish_reason == ("stop" if decision.stop_reason in stops else "length")
