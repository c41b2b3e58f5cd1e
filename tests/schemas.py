"""The JSON schemas a small model is held to by the structured-output and strict-tool tests:
nested objects, enums and arrays (issue 19's three), each object closed."""

from __future__ import annotations

from typing import Any


def closed(properties: dict[str, Any]) -> dict[str, Any]:
    """An object schema with exactly these properties, all required."""
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


NAME = {"type": "string", "maxLength": 16}
COLOURS = {"type": "array", "items": NAME, "minItems": 1, "maxItems": 3}
NUMBERS = {
    "type": "array",
    "items": {"type": "integer", "minimum": 0, "maximum": 999},
    "maxItems": 3,
}

NESTED = closed({"person": closed({"name": NAME, "address": closed({"city": NAME})})})
ENUMS = closed(
    {
        "sentiment": {"enum": ["positive", "negative", "neutral"]},
        "confidence": {"type": "string", "enum": ["low", "medium", "high"]},
    }
)
ARRAYS = closed({"colours": COLOURS, "numbers": NUMBERS})
