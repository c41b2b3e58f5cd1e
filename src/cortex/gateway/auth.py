"""API keys: `Authorization: Bearer <key>` or `x-api-key: <key>`, refused in the client's dialect.

With `[auth] keys` set, every route but `/health` and the dashboard's static files (`/ui`) needs
one of them (Claude Code's `HEAD /` warm-up takes any status); `/admin/*` needs an admin key when
`admin_keys` is set (else an API key). Keys are compared by their SHA-256 digests in constant
time, so neither the time taken nor a key's length says anything about the keys held.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any

from pydantic import SecretStr
from starlette.responses import JSONResponse, Response

from cortex.errors import AuthenticationError, Dialect

__all__ = ["KeyRing", "dialect_of", "request_key"]

OPEN_PATHS = frozenset({"/health", "/ui"})
OPEN_PREFIXES = ("/ui/",)
"""The dashboard's static files: they hold no data (it asks for the admin key itself)."""


class KeyRing:
    """The accepted keys, compared in constant time.

    Args:
        keys: API keys (empty: the API is open).
        admin_keys: keys for `/admin/*` (empty: admin routes take the API keys).
    """

    def __init__(
        self, keys: Iterable[str | SecretStr] = (), admin_keys: Iterable[str | SecretStr] = ()
    ) -> None:
        self.keys = [_digest(k) for k in map(_plain, keys) if k]
        self.admin_keys = [_digest(k) for k in map(_plain, admin_keys) if k]

    def required(self, admin: bool) -> list[bytes]:
        """The keys a route accepts (empty when it is open)."""
        return (self.admin_keys or self.keys) if admin else self.keys

    def refusal(self, path: str, headers: Mapping[str, str]) -> Response | None:
        """The 401 answer (in the client's dialect) to a request to `path` without an accepted
        key; None when the route is open or the key opens it.

        Args:
            path: the request's path.
            headers: its headers, names lower-cased.
        """
        admin = path.startswith("/admin")
        if path in OPEN_PATHS or path.startswith(OPEN_PREFIXES) or not self.required(admin):
            return None
        if self.accepts(request_key(headers), admin=admin):
            return None
        what = "an admin key" if admin and self.admin_keys else "an API key"
        error = AuthenticationError(
            f"this route needs {what}: send `Authorization: Bearer <key>` or `x-api-key: <key>`"
        )
        dialect = dialect_of(path, headers)
        return JSONResponse(
            error.to_dialect(dialect),
            status_code=error.status_for(dialect),
            headers={"www-authenticate": "Bearer"},
        )

    def accepts(self, given: str | None, *, admin: bool) -> bool:
        """Whether `given` opens a route (of the admin kind or not)."""
        wanted = self.required(admin)
        if not wanted:
            return True
        if not given:
            return False
        key = _digest(given)
        # Compare against every key (no early exit) so timing says nothing of which matched.
        return any([hmac.compare_digest(key, k) for k in wanted])


def _plain(key: str | SecretStr) -> str:
    return key.get_secret_value() if isinstance(key, SecretStr) else key


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()


def request_key(headers: MutableMapping[str, str] | Any) -> str | None:
    """The key a request carries: `x-api-key`, else the `Authorization: Bearer` token."""
    key = headers.get("x-api-key")
    if key:
        return str(key).strip()
    scheme, _, token = str(headers.get("authorization") or "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def dialect_of(path: str, headers: MutableMapping[str, str] | Any) -> Dialect:
    """The dialect a request speaks: Anthropic for `/v1/messages*` and for `/v1/models` asked
    with `anthropic-version`, OpenAI otherwise."""
    if path.startswith("/v1/messages"):
        return "anthropic"
    if path.startswith("/v1/models") and "anthropic-version" in headers:
        return "anthropic"
    return "openai"
