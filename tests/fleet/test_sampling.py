"""Sampling defaults resolve field by field: request, profile, the model's own, built-ins."""

from __future__ import annotations

from cortex.config import ModelProfile
from cortex.fleet.sampling import BUILTIN_SAMPLING, resolve_sampling


def test_each_field_comes_from_the_first_level_that_sets_it() -> None:
    profile = ModelProfile(id="m", temperature=0.3, max_tokens=100)
    generation = {"temperature": 0.9, "top_p": 0.8, "top_k": 20, "repetition_penalty": 1.1}
    out = resolve_sampling({"model": "m", "top_k": 5}, profile, generation)
    assert out["top_k"] == 5  # the request
    assert out["temperature"] == 0.3 and out["max_tokens"] == 100  # the profile
    assert out["top_p"] == 0.8 and out["repetition_penalty"] == 1.1  # the model's own
    assert out["min_p"] == BUILTIN_SAMPLING["min_p"]  # built-in


def test_built_ins_when_nothing_else_says_and_no_max_tokens_invented() -> None:
    out = resolve_sampling({"model": "m"})
    assert {k: out[k] for k in BUILTIN_SAMPLING} == dict(BUILTIN_SAMPLING)
    assert "max_tokens" not in out


def test_max_completion_tokens_counts_as_max_tokens_and_greedy_models_stay_greedy() -> None:
    out = resolve_sampling({"max_completion_tokens": 7}, ModelProfile(id="m", max_tokens=100))
    assert out["max_tokens"] == 7
    assert resolve_sampling({}, None, {"do_sample": False, "temperature": 0.6})["temperature"] == 0
    assert resolve_sampling({"temperature": None}, None, {})["temperature"] == 1.0


def test_presence_penalty_comes_from_the_profile_then_the_model() -> None:
    from cortex.config import ModelProfile

    profile = ModelProfile(id="m", presence_penalty=1.5)
    assert resolve_sampling({"model": "m"}, profile)["presence_penalty"] == 1.5
    assert (
        resolve_sampling({"model": "m", "presence_penalty": 0.5}, profile)["presence_penalty"]
        == 0.5
    )
    generation = {"presence_penalty": 1.0}
    assert resolve_sampling({"model": "m"}, None, generation)["presence_penalty"] == 1.0
    assert resolve_sampling({"model": "m"})["presence_penalty"] == 0.0
