"""Accept an envelope model or a plain dict of the same shape, uniformly."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from cortex.errors import InvalidRequestError

__all__ = ["as_model", "plain"]

M = TypeVar("M", bound=BaseModel)


def as_model(cls: type[M], value: M | Mapping[str, Any]) -> M:
    """`value` as a `cls` instance; a dict that does not fit raises `InvalidRequestError`."""
    if isinstance(value, cls):
        return value
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    try:
        return cls.model_validate(value)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise InvalidRequestError(f"{where}: {first.get('msg')}", param=where or None) from exc


def plain(value: BaseModel | Mapping[str, Any]) -> dict[str, Any]:
    """`value` as a JSON-shaped dict (a model is dumped the way it goes on the wire)."""
    if isinstance(value, BaseModel):
        dumped: dict[str, Any] = value.model_dump(mode="json")
        return dumped
    return dict(value)
