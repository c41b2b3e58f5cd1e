"""Per-key limits: requests in flight and request rate.

`KeyLimiter` keeps, per key, the requests in flight and a token bucket: a key may start `burst`
requests at once, then `requests_per_minute` on average. A request over either limit gets 429
in its dialect with `Retry-After` (the seconds until the bucket holds a token again; 1 for the
concurrency limit). Keys are held only as a hash, and idle keys are forgotten. With no API keys
configured, the client's address stands in for the key.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from starlette.types import Scope

from cortex.config import LimitsConfig
from cortex.errors import RateLimitError
from cortex.gateway.auth import request_key

__all__ = ["KeyLimiter", "Limiter", "identity"]

_MAX_KEYS = 10_000  # buckets kept before idle ones are forgotten


@dataclass
class _Bucket:
    tokens: float
    stamp: float
    in_flight: int = 0


class KeyLimiter:
    """Per-key concurrency and rate limits.

    Args:
        limits: `[limits]` of cortex.toml (0 = no limit).
        clock: monotonic seconds (tests pass their own).
    """

    def __init__(self, limits: LimitsConfig, *, clock: Callable[[], float] = time.monotonic):
        self.concurrent = limits.concurrent_requests
        self.per_s = limits.requests_per_minute / 60.0
        self.capacity = float(limits.burst or max(1.0, limits.requests_per_minute))
        self.clock = clock
        self._buckets: dict[str, _Bucket] = {}

    @property
    def active(self) -> bool:
        """Whether any limit is set."""
        return bool(self.concurrent or self.per_s)

    def acquire(self, who: str) -> None:
        """Count a request of `who` starting now.

        Raises:
            RateLimitError: over the concurrency or the rate limit (Retry-After set).
        """
        now = self.clock()
        bucket = self._buckets.get(who)
        if bucket is None:
            if len(self._buckets) >= _MAX_KEYS:
                self._forget_idle(now)
            bucket = self._buckets[who] = _Bucket(self.capacity, now)
        if self.concurrent and bucket.in_flight >= self.concurrent:
            raise RateLimitError(
                f"this key already has {bucket.in_flight} requests in flight "
                f"(limit {self.concurrent}); retry when one ends",
                retry_after_s=1.0,
            )
        if self.per_s:
            bucket.tokens = min(self.capacity, bucket.tokens + (now - bucket.stamp) * self.per_s)
            bucket.stamp = now
            if bucket.tokens < 1.0:
                wait_s = math.ceil((1.0 - bucket.tokens) / self.per_s)
                raise RateLimitError(
                    f"this key is over its rate limit of {self.per_s * 60:g} requests per "
                    f"minute; retry in {wait_s} s",
                    retry_after_s=wait_s,
                )
            bucket.tokens -= 1.0
        bucket.in_flight += 1

    async def enter(self, who: str) -> None:
        """`acquire`, as the guard calls it (a shared limiter does I/O here)."""
        self.acquire(who)

    async def leave(self, who: str) -> None:
        """`release`, as the guard calls it."""
        self.release(who)

    def release(self, who: str) -> None:
        """A request of `who` ended."""
        bucket = self._buckets.get(who)
        if bucket is not None:
            bucket.in_flight -= 1

    def in_flight(self, who: str) -> int:
        """Requests of `who` in flight now."""
        bucket = self._buckets.get(who)
        return bucket.in_flight if bucket is not None else 0

    def _forget_idle(self, now: float) -> None:
        """Drop the buckets with nothing in flight that have refilled (they start full anyway)."""
        for who, bucket in list(self._buckets.items()):
            full = not self.per_s or (
                bucket.tokens + (now - bucket.stamp) * self.per_s >= self.capacity
            )
            if bucket.in_flight == 0 and full:
                del self._buckets[who]


def identity(scope: Scope, headers: Mapping[str, str], *, keyed: bool) -> str:
    """Who a request counts against: its key's hash, or its address when keys are off.

    Args:
        scope: the request's ASGI scope (its client address).
        headers: its headers, names lower-cased.
        keyed: whether API keys are configured.
    """
    key = request_key(headers) if keyed else None
    if key:
        return "key:" + hashlib.sha256(key.encode()).hexdigest()[:32]
    client = scope.get("client")
    return f"addr:{client[0] if client else 'unknown'}"


class Limiter(Protocol):
    """Per-key limits as the gateway's guard (`gateway/guard.py`) uses them: `KeyLimiter`
    (this process) or `cortex.gateway.shared_limits.RedisLimiter` (shared by several
    gateways)."""

    @property
    def active(self) -> bool:
        """Whether any limit is set."""
        ...

    async def enter(self, who: str) -> None:
        """Count a request starting (raises `CortexError` to refuse it)."""
        ...

    async def leave(self, who: str) -> None:
        """Count a request ending."""
        ...
