"""Model ids: what one may look like, so that an id can never be read as a path."""

from __future__ import annotations

import re

from cortex.errors import InvalidRequestError

__all__ = ["MODEL_ID_PATTERN", "check_model_id"]

_ALLOWED = r"[^/\\\x00-\x1f]"
_NOT_DOT = r"[^/\\\x00-\x1f.]"
_FIRST = r"[^/\\\x00-\x1f.~]"
MODEL_ID_PATTERN = (
    rf"^(?:{_FIRST}{_ALLOWED}*|\.{_NOT_DOT}{_ALLOWED}*|\.\.{_ALLOWED}+)"
    rf"(?:/(?:{_NOT_DOT}{_ALLOWED}*|\.{_NOT_DOT}{_ALLOWED}*|\.\.{_ALLOWED}+))*$"
)
"""What a model id may look like: `/`-separated names, none empty, `.` or `..`, no backslash
or control character, not starting with `~` (so an id can never be read as a path)."""
_MODEL_ID = re.compile(MODEL_ID_PATTERN)


def check_model_id(model_id: object) -> str:
    """Refuse a model id that is not a plain name (ids are looked up, never used as paths).

    Raises:
        InvalidRequestError: for a non-string or empty id, one over 256 characters, or one that
            breaks `MODEL_ID_PATTERN` (absolute, `..`, backslashes, control characters) (400).
    """
    if not isinstance(model_id, str) or not model_id:
        raise InvalidRequestError("`model` must be a non-empty string", param="model")
    if len(model_id) > 256 or not _MODEL_ID.fullmatch(model_id):
        raise InvalidRequestError(f"invalid model id {model_id!r}", param="model")
    return model_id
