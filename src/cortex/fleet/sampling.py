"""Sampling defaults resolved per field: the request, the profile, the model's own, built-ins."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cortex.config import ModelProfile

__all__ = ["BUILTIN_SAMPLING", "SAMPLING_FIELDS", "resolve_sampling"]

BUILTIN_SAMPLING: Mapping[str, Any] = {
    "temperature": 1.0,
    "top_p": 1.0,
    "top_k": 0,
    "min_p": 0.0,
    "repetition_penalty": 1.0,
    "presence_penalty": 0.0,
}
"""The last resort for each field (OpenAI's defaults; top_k 0 and min_p 0 mean off)."""

SAMPLING_FIELDS = (
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "repetition_penalty",
    "presence_penalty",
    "max_tokens",
)
"""The fields resolved; `max_tokens` has no built-in (the reply may run to the context's end)."""

# generation_config.json names of the same knobs.
_GENERATION_NAMES = {
    "temperature": ("temperature",),
    "top_p": ("top_p",),
    "top_k": ("top_k",),
    "min_p": ("min_p",),
    "repetition_penalty": ("repetition_penalty",),
    "presence_penalty": ("presence_penalty",),
    "max_tokens": ("max_new_tokens",),
}


def resolve_sampling(
    request: Mapping[str, Any],
    profile: ModelProfile | None = None,
    generation_config: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Fill each sampling field the request leaves out, field by field.

    The order: the request, then the model's profile in models.toml, then the model's own
    `generation_config.json` (as the neuron reports it), then `BUILTIN_SAMPLING`. A request's
    `max_completion_tokens` counts as its `max_tokens`. A generation config that turns sampling
    off (`do_sample: false`) means greedy: temperature 0.

    Args:
        request: an OpenAI chat or completions request body.
        profile: the model's profile, if it has one.
        generation_config: the model's own defaults, if the neuron reported them.

    Returns:
        A copy of `request` with every field of `SAMPLING_FIELDS` that has a value somewhere.
    """
    out = dict(request)
    if out.get("max_completion_tokens") is not None and out.get("max_tokens") is None:
        out["max_tokens"] = out["max_completion_tokens"]
    generation = dict(generation_config or {})
    if generation.get("do_sample") is False:
        generation["temperature"] = 0.0
    for field in SAMPLING_FIELDS:
        if out.get(field) is not None:
            continue
        value = getattr(profile, field, None) if profile is not None else None
        if value is None:
            for name in _GENERATION_NAMES[field]:
                if isinstance(generation.get(name), int | float) and not isinstance(
                    generation.get(name), bool
                ):
                    value = generation[name]
                    break
        if value is None:
            value = BUILTIN_SAMPLING.get(field)
        if value is not None:
            out[field] = value
    return out
