"""Per-key request-rate and concurrency limits kept in Redis, shared by several gateways.

The same rules as `cortex.gateway.limits.KeyLimiter` (a token bucket of `burst` requests
refilled at `requests_per_minute`, and at most `concurrent_requests` in flight), checked and
taken in one Lua script per request so that gateways behind one load balancer enforce one
limit together. The in-flight count of a key expires after `inflight_ttl_s` without a request,
so a gateway killed mid-request cannot hold a key's slots forever.

What can go wrong: Redis cannot be reached; the request is refused with 503
(`state_unavailable`): the limits fail closed, as the budgets do.
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import Any

from cortex.config import CortexConfig, LimitsConfig
from cortex.errors import CortexError, RateLimitError
from cortex.gateway.state import StateUnavailableError

__all__ = ["RedisLimiter", "shared_limiter"]

# KEYS: the bucket hash, the in-flight counter. ARGV: now, per_s, capacity, concurrent, ttl.
_ENTER = """
local bucket, inflight = KEYS[1], KEYS[2]
local now, per_s, capacity = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local concurrent, ttl = tonumber(ARGV[4]), tonumber(ARGV[5])
local running = tonumber(redis.call('GET', inflight) or '0')
if concurrent > 0 and running >= concurrent then return {0, running, '1'} end
if per_s > 0 then
  local tokens = tonumber(redis.call('HGET', bucket, 'tokens') or tostring(capacity))
  local stamp = tonumber(redis.call('HGET', bucket, 'stamp') or tostring(now))
  tokens = math.min(capacity, tokens + (now - stamp) * per_s)
  if tokens < 1 then
    return {1, running, tostring((1 - tokens) / per_s)}
  end
  redis.call('HSET', bucket, 'tokens', tostring(tokens - 1), 'stamp', tostring(now))
  redis.call('EXPIRE', bucket, math.ceil(capacity / per_s) + 60)
end
redis.call('INCR', inflight)
redis.call('EXPIRE', inflight, ttl)
return {2, running + 1, '0'}
"""


class RedisLimiter:
    """`KeyLimiter`'s limits, kept in Redis.

    Args:
        limits: `[limits]` of cortex.toml.
        url: the Redis URL (`[state] redis_url`).
        inflight_ttl_s: how long a key's in-flight count lives without a new request.
        clock: unix seconds (shared by the gateways).
    """

    def __init__(
        self,
        limits: LimitsConfig,
        url: str,
        *,
        inflight_ttl_s: float = 3600.0,
        clock: Any = time.time,
        prefix: str = "cortex:limits:",
    ) -> None:
        import redis.asyncio

        self.concurrent = limits.concurrent_requests
        self.per_s = limits.requests_per_minute / 60.0
        self.capacity = float(limits.burst or max(1.0, limits.requests_per_minute))
        self.ttl = math.ceil(inflight_ttl_s)
        self.clock = clock
        self.prefix = prefix
        self._redis = redis.asyncio.Redis.from_url(
            url, socket_timeout=2.0, socket_connect_timeout=2.0, decode_responses=True
        )
        self._enter = self._redis.register_script(_ENTER)

    @property
    def active(self) -> bool:
        """Whether any limit is set."""
        return bool(self.concurrent or self.per_s)

    async def _call(self, work: Any) -> Any:
        import redis

        try:
            return await work
        except (redis.RedisError, OSError) as error:
            raise StateUnavailableError(
                f"the shared limits (Redis) cannot be reached: {error}", code="state_unavailable"
            ) from error

    async def enter(self, who: str) -> None:
        """Count a request of `who` starting now (on every gateway sharing the Redis).

        Raises:
            RateLimitError: over the concurrency or the rate limit (Retry-After set).
            StateUnavailableError: Redis cannot be reached (503).
        """
        keys = [f"{self.prefix}{who}:bucket", f"{self.prefix}{who}:inflight"]
        args = [self.clock(), self.per_s, self.capacity, self.concurrent, self.ttl]
        outcome, running, wait = await self._call(self._enter(keys=keys, args=args))
        if int(outcome) == 0:
            raise RateLimitError(
                f"this key already has {running} requests in flight "
                f"(limit {self.concurrent}); retry when one ends",
                retry_after_s=1.0,
            )
        if int(outcome) == 1:
            wait_s = max(1, math.ceil(float(wait)))
            raise RateLimitError(
                f"this key is over its rate limit of {self.per_s * 60:g} requests per "
                f"minute; retry in {wait_s} s",
                retry_after_s=wait_s,
            )

    async def leave(self, who: str) -> None:
        """A request of `who` ended (a lost Redis leaves the count to its TTL)."""
        with contextlib.suppress(CortexError):
            await self._call(self._redis.decr(f"{self.prefix}{who}:inflight"))


def shared_limiter(config: CortexConfig) -> RedisLimiter | None:
    """The `[limits]` of a cortex.toml kept in `[state] redis_url` (None: no Redis, or no
    limits: they stay in the process)."""
    url = config.state.redis_url
    limiter = None if url is None else RedisLimiter(config.limits, url.get_secret_value())
    return limiter if limiter is not None and limiter.active else None
