"""SamplingParams validation, penalties, logprobs and stop strings across token boundaries."""

from __future__ import annotations

import math

import pytest
import torch

from cortex.engine.sampling import (
    SamplingParams,
    StopStringMatcher,
    apply_penalties,
    top_logprobs,
)
from cortex.errors import InvalidRequestError


def test_defaults_match_the_contract() -> None:
    p = SamplingParams()
    assert (p.temperature, p.top_p, p.top_k, p.min_p) == (1.0, 1.0, 0, 0.0)
    assert (p.repetition_penalty, p.presence_penalty, p.frequency_penalty) == (1.0, 0.0, 0.0)
    assert (p.seed, p.stop, p.stop_token_ids, p.max_tokens) == (None, (), (), 256)
    assert (p.logprobs, p.top_logprobs, p.ignore_eos) == (False, 0, False)
    assert not p.has_penalties and not p.is_greedy


def test_lists_are_frozen_into_tuples() -> None:
    p = SamplingParams(stop=["a", "b"], stop_token_ids=[3, 4])  # type: ignore[arg-type]
    assert p.stop == ("a", "b") and p.stop_token_ids == (3, 4)
    assert SamplingParams(stop="x").stop == ("x",)  # type: ignore[arg-type]
    hash(p)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("temperature", -0.1),
        ("temperature", math.nan),
        ("top_p", 0.0),
        ("top_p", 1.5),
        ("top_k", -1),
        ("min_p", 1.5),
        ("repetition_penalty", 0.0),
        ("presence_penalty", 2.5),
        ("frequency_penalty", -3.0),
        ("max_tokens", 0),
        ("top_logprobs", 21),
        ("seed", -1),
        ("stop", ("",)),
    ],
)
def test_invalid_values_name_the_field(field: str, value: object) -> None:
    with pytest.raises(InvalidRequestError) as info:
        SamplingParams(**{field: value})  # type: ignore[arg-type]
    assert info.value.param == field and info.value.status == 400


def feed_all(matcher: StopStringMatcher, pieces: list[str]) -> tuple[list[str], bool]:
    released = []
    for piece in pieces:
        released.append(matcher.feed(piece))
        if matcher.stopped:
            break
    released.append(matcher.flush())
    return released, matcher.stopped


def test_stop_string_spanning_three_tokens_is_cut_and_hidden() -> None:
    released, stopped = feed_all(StopStringMatcher(["<END>"]), ["Hello <", "EN", "D> tail"])
    assert stopped and "".join(released) == "Hello "
    # Nothing that could begin the stop string was released early.
    assert released[0] == "Hello "


def test_partial_match_that_fails_is_released_later() -> None:
    released, stopped = feed_all(StopStringMatcher(["<END>"]), ["a <E", "ND", "!"])
    assert not stopped
    assert released == ["a ", "", "<END!", ""]
    assert "".join(released) == "a <END!"


def test_earliest_of_several_stops_wins() -> None:
    released, stopped = feed_all(StopStringMatcher(["world", "lo w"]), ["hel", "lo world"])
    assert stopped and "".join(released) == "hel"


def test_stop_inside_a_single_token_and_text_after_flush() -> None:
    released, stopped = feed_all(StopStringMatcher(["\n\n"]), ["one\n\ntwo"])
    assert stopped and "".join(released) == "one"
    released, stopped = feed_all(StopStringMatcher(["xyz"]), ["ab", "x"])
    assert not stopped and released == ["ab", "", "x"]


def test_no_stops_passes_text_through() -> None:
    matcher = StopStringMatcher([])
    assert matcher.feed("anything") == "anything" and matcher.flush() == ""


def reference_penalties(
    row: list[float], p: SamplingParams, prompt: list[int], output: list[int]
) -> list[float]:
    row = list(row)
    for token in set(prompt) | set(output):
        if p.repetition_penalty != 1.0:
            value = row[token]
            row[token] = value / p.repetition_penalty if value > 0 else value * p.repetition_penalty
    for token in set(output):
        count = output.count(token)
        row[token] -= p.frequency_penalty * count + p.presence_penalty
    return row


def test_penalties_match_a_plain_reference() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 12, generator=generator)
    params = [
        SamplingParams(repetition_penalty=1.3),
        SamplingParams(presence_penalty=0.5, frequency_penalty=0.25),
        SamplingParams(),
    ]
    prompts = [[1, 2, 3], [4, 5], [6]]
    outputs = [[3, 7, 7], [5, 5, 5, 9], [6, 6]]
    result = apply_penalties(logits, params, prompts, outputs)
    for row in range(3):
        expected = reference_penalties(
            logits[row].tolist(), params[row], prompts[row], outputs[row]
        )
        assert result[row].tolist() == pytest.approx(expected, abs=1e-6)
    assert torch.equal(result[2], logits[2])  # no penalties: untouched
    assert apply_penalties(logits, [SamplingParams()] * 3, prompts, outputs) is logits


def test_top_logprobs_are_log_softmax_of_the_logits() -> None:
    logits = torch.tensor([[1.0, 3.0, 2.0, 0.0], [0.0, 0.0, 5.0, 1.0]])
    result = top_logprobs(logits, torch.tensor([2, 3]), [2, 0])
    expected = torch.log_softmax(logits, dim=-1)
    assert result[0].token_id == 2
    assert result[0].logprob == pytest.approx(expected[0, 2].item())
    assert [e.token_id for e in result[0].top_logprobs] == [1, 2]
    assert result[0].top_logprobs[0].logprob == pytest.approx(expected[0, 1].item())
    assert result[1].logprob == pytest.approx(expected[1, 3].item())
    assert result[1].top_logprobs == ()


def test_sample_tokens_penalises_before_the_draw_and_reports_raw_logprobs() -> None:
    from cortex.engine.sampling import sample_tokens

    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 64, generator=generator)
    logits[0, 5] = logits[0].max() + 1.0  # the favourite, already generated twice
    params = [
        SamplingParams(temperature=0.0, frequency_penalty=2.0, presence_penalty=2.0, logprobs=True),
        SamplingParams(temperature=0.0),
    ]
    result = sample_tokens(logits, params, [0, 0], [2, 0], [[1], [1]], [[5, 5], []])
    penalised = logits[0].clone()
    penalised[5] -= 2.0 * 2 + 2.0
    assert result.token_ids == [int(penalised.argmax()), int(logits[1].argmax())]
    assert result.token_ids[0] != 5
    entry = result.logprobs[0]
    assert entry is not None and entry.token_id == result.token_ids[0]
    raw = torch.log_softmax(logits[0], dim=-1)[entry.token_id].item()
    assert entry.logprob == pytest.approx(raw)
    assert result.logprobs[1] is None


def test_sample_tokens_draw_does_not_depend_on_the_batch() -> None:
    from cortex.engine.sampling import sample_tokens

    generator = torch.Generator().manual_seed(2)
    logits = torch.randn(5, 256, generator=generator)
    params = [SamplingParams(temperature=0.8, top_p=0.9, top_k=40, seed=s) for s in range(5)]
    seeds, steps = [11, 22, 33, 44, 55], [0, 3, 1, 7, 2]
    empty: list[list[int]] = [[] for _ in range(5)]
    together = sample_tokens(logits, params, seeds, steps, empty, empty).token_ids
    alone = [
        sample_tokens(
            logits[i : i + 1], params[i : i + 1], seeds[i : i + 1], steps[i : i + 1], [[]], [[]]
        ).token_ids[0]
        for i in range(5)
    ]
    assert together == alone
    again = sample_tokens(logits, params, [12, 22, 33, 44, 55], steps, empty, empty).token_ids
    assert again[1:] == together[1:]
