"""The base of every wire envelope: tolerant on input, exact on output."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, SerializerFunctionWrapHandler, model_serializer

__all__ = ["WireModel", "tag_of"]


class WireModel(BaseModel):
    """A pydantic model for one JSON object on the wire.

    Input is tolerant: unknown fields are kept (`extra="allow"`), so a client's newer fields
    survive a parse and never cause a 500. Output is exact: `model_dump(mode="json")` and
    `model_dump_json()` drop fields whose value is `None`, except the ones a class names in
    `wire_nulls` (fields the dialect always sends, such as Anthropic's `stop_sequence: null`).
    Fields whose Python name differs from the wire name (e.g. `schema_`) serialise by alias.
    """

    model_config = ConfigDict(
        extra="allow",
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
    )

    wire_nulls: ClassVar[frozenset[str]] = frozenset()

    @model_serializer(mode="wrap")
    def _drop_nulls(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        keep = self.wire_nulls
        return {k: v for k, v in data.items() if v is not None or k in keep}


def tag_of(known: frozenset[str], fallback: str = "unknown") -> Any:
    """A pydantic discriminator function: the `type` of a block, or `fallback` if unknown.

    Unknown block types (new server-tool blocks, search results...) parse into a permissive
    fallback model instead of failing the whole request.
    """

    def discriminate(value: Any) -> str:
        kind = value.get("type") if isinstance(value, Mapping) else getattr(value, "type", None)
        return kind if isinstance(kind, str) and kind in known else fallback

    return discriminate
