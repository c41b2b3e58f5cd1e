"""Reading a JSON request body safely: a clear 400 for bad JSON, bad UTF-8 and deep nesting.

Both servers read client bodies through `parse_json_object`. Nesting is bounded (`MAX_DEPTH`
levels) at the door, so no later layer (validation, translation, chat templates, serialisation)
can be driven into a `RecursionError` by a body that parsed.
"""

from __future__ import annotations

import json
from typing import Any

from cortex.errors import InvalidRequestError

__all__ = ["MAX_DEPTH", "json_depth", "parse_json_object"]

MAX_DEPTH = 64
"""Deepest nesting of objects and arrays accepted (real tool schemas stay well under 20)."""


def json_depth(value: Any, limit: int) -> int:
    """The nesting depth of a parsed JSON value (a scalar is 0), counted up to `limit + 1`."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        depth += 1
        if depth > deepest:
            deepest = depth
            if deepest > limit:
                return deepest
        stack.extend((child, depth) for child in children if isinstance(child, dict | list))
    return deepest


def parse_json_object(raw: bytes | str, *, max_depth: int = MAX_DEPTH) -> dict[str, Any]:
    """Parse a request body that must be a JSON object.

    Raises:
        InvalidRequestError: not JSON (or not UTF-8), not an object, or nested deeper than
            `max_depth` levels.
    """
    too_deep = f"the body is nested deeper than {max_depth} levels"
    try:
        data = json.loads(raw)
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise InvalidRequestError(f"the body is not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidRequestError(too_deep) from None
    if not isinstance(data, dict):
        raise InvalidRequestError("the body must be a JSON object")
    if json_depth(data, max_depth) > max_depth:
        raise InvalidRequestError(too_deep)
    return data
