"""Where token spend is kept: an SQLite file (one gateway) or Redis (several, shared).

Each budget is a set of entries, one per request: its id, when it started (unix seconds, so
gateways on several hosts agree) and its tokens (reserved, then settled). A rolling window sums
the entries younger than its length; a balance sums them all (settled entries of a balance fold
into one running total, so a balance does not grow an entry per request). A reservation checks
and adds in one step: an SQLite `BEGIN IMMEDIATE` transaction, or one Redis Lua script, so two
gateways can never both take the last tokens.

What can go wrong: the file or Redis cannot be reached. `StateUnavailableError` (503) is raised
and the gateway fails closed for keys with a budget; it recovers by itself when the state is
back (each call reconnects).
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from cortex.errors import CortexError, OverloadedError

__all__ = [
    "BudgetState",
    "NoState",
    "RedisState",
    "Refusal",
    "SqliteState",
    "StateUnavailableError",
]

_TOTAL = "_total"  # the folded, settled spend of a balance


class StateUnavailableError(OverloadedError):
    """The shared state (SQLite file or Redis) cannot be reached: fail closed (503)."""


@dataclass(frozen=True)
class Refusal:
    """A reservation that did not fit: what was spent, and when enough will be free again."""

    spent: int
    retry_after_s: float | None = None


class BudgetState(Protocol):
    """Spend per budget, shared by every gateway of a deployment."""

    async def reserve(
        self, budget: str, request: str, tokens: int, *, limit: int, window_s: float | None
    ) -> Refusal | None:
        """Add `tokens` for `request` if the budget holds them (None), else a `Refusal`."""
        ...

    async def settle(
        self, budget: str, request: str, reserved: int, used: int, window_s: float | None = None
    ) -> None:
        """Replace a reservation by the tokens used."""
        ...

    async def spent(self, budget: str, *, window_s: float | None) -> int:
        """Tokens in the budget's window now."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


class NoState:
    """No state at all: for a gateway without budgets (every call is a no-op)."""

    async def reserve(
        self, budget: str, request: str, tokens: int, *, limit: int, window_s: float | None
    ) -> Refusal | None:
        return None

    async def settle(
        self, budget: str, request: str, reserved: int, used: int, window_s: float | None = None
    ) -> None:
        return None

    async def spent(self, budget: str, *, window_s: float | None) -> int:
        return 0

    async def close(self) -> None:
        return None


def _retry_after(entries: list[tuple[float, int]], over: int, window_s: float, now: float) -> float:
    """Seconds until the oldest entries leaving the window free `over` tokens."""
    for started, tokens in sorted(entries):
        over -= tokens
        if over <= 0:
            return max(0.0, started + window_s - now)
    return window_s


class SqliteState:
    """Spend in an SQLite file (WAL mode; safe across processes on one host).

    Args:
        path: the database file (created with its table when missing).
        clock: unix seconds (tests pass their own).
    """

    def __init__(self, path: str | Path, *, clock: Any = time.time) -> None:
        self.path = Path(path)
        self.clock = clock
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(
                self.path, timeout=10, isolation_level=None, check_same_thread=False
            )
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS spend (budget TEXT NOT NULL, request TEXT NOT NULL, "
                "started REAL NOT NULL, tokens INTEGER NOT NULL, PRIMARY KEY (budget, request))"
            )
            self._db = db
        return self._db

    async def _run(self, work: Any, *args: Any) -> Any:
        def locked() -> Any:
            with self._lock:
                try:
                    return work(self._connect(), *args)
                except sqlite3.Error as error:
                    raise StateUnavailableError(
                        f"the budget state ({self.path}) cannot be used: {error}",
                        code="state_unavailable",
                    ) from error

        return await asyncio.to_thread(locked)

    def _entries(self, db: sqlite3.Connection, budget: str, window_s: float | None) -> list[Any]:
        if window_s is None:
            sql = "SELECT started, tokens FROM spend WHERE budget = ?"
            return db.execute(sql, (budget,)).fetchall()
        cutoff = self.clock() - window_s
        db.execute("DELETE FROM spend WHERE budget = ? AND started <= ?", (budget, cutoff))
        sql = "SELECT started, tokens FROM spend WHERE budget = ?"
        return db.execute(sql, (budget,)).fetchall()

    async def reserve(
        self, budget: str, request: str, tokens: int, *, limit: int, window_s: float | None
    ) -> Refusal | None:
        def work(db: sqlite3.Connection) -> Refusal | None:
            db.execute("BEGIN IMMEDIATE")
            try:
                entries = self._entries(db, budget, window_s)
                spent = sum(t for _, t in entries)
                now = self.clock()
                if spent + tokens > limit:
                    retry = None
                    if window_s is not None:
                        retry = _retry_after(entries, spent + tokens - limit, window_s, now)
                    return Refusal(spent, retry)
                db.execute("INSERT INTO spend VALUES (?, ?, ?, ?)", (budget, request, now, tokens))
                return None
            finally:
                db.execute("COMMIT")

        result: Refusal | None = await self._run(work)
        return result

    async def settle(
        self, budget: str, request: str, reserved: int, used: int, window_s: float | None = None
    ) -> None:
        def work(db: sqlite3.Connection) -> None:
            db.execute("BEGIN IMMEDIATE")
            try:
                if window_s is None:  # fold into the balance's running total
                    db.execute(
                        "DELETE FROM spend WHERE budget = ? AND request = ?", (budget, request)
                    )
                    db.execute(
                        "INSERT INTO spend VALUES (?, ?, 0, ?) ON CONFLICT (budget, request) "
                        "DO UPDATE SET tokens = tokens + excluded.tokens",
                        (budget, _TOTAL, used),
                    )
                else:
                    db.execute(
                        "UPDATE spend SET tokens = ? WHERE budget = ? AND request = ?",
                        (used, budget, request),
                    )
            finally:
                db.execute("COMMIT")

        await self._run(work)

    async def spent(self, budget: str, *, window_s: float | None) -> int:
        def work(db: sqlite3.Connection) -> int:
            return sum(t for _, t in self._entries(db, budget, window_s))

        result: int = await self._run(work)
        return result

    async def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None


# KEYS: the budget's sorted set (request -> start) and hash (request -> tokens).
# ARGV: now, window (0: a balance), limit, tokens, request.
_RESERVE = """
local z, h = KEYS[1], KEYS[2]
local now, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local limit, amount, rid = tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
if window > 0 then
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', z, '-inf', now - window)) do
    redis.call('HDEL', h, m)
  end
  redis.call('ZREMRANGEBYSCORE', z, '-inf', now - window)
end
local spent = 0
for _, v in ipairs(redis.call('HVALS', h)) do spent = spent + tonumber(v) end
if spent + amount > limit then
  local retry = -1
  if window > 0 then
    local over = spent + amount - limit
    local items = redis.call('ZRANGE', z, 0, -1, 'WITHSCORES')
    for i = 1, #items, 2 do
      over = over - tonumber(redis.call('HGET', h, items[i]) or '0')
      if over <= 0 then retry = tonumber(items[i + 1]) + window - now; break end
    end
    if retry < 0 then retry = window end
  end
  return {0, spent, tostring(retry)}
end
redis.call('ZADD', z, now, rid)
redis.call('HSET', h, rid, amount)
return {1, spent + amount, '0'}
"""


class RedisState:
    """Spend in Redis, shared by every gateway pointed at it (`[state] redis_url`).

    Args:
        url: `redis://host:port/db`.
        clock: unix seconds (tests pass their own).
    """

    def __init__(self, url: str, *, clock: Any = time.time, prefix: str = "cortex:budget:") -> None:
        try:
            import redis.asyncio
        except ImportError as error:
            raise CortexError(
                "[state] redis_url needs the redis client: pip install 'cortex-fleet[redis]'"
            ) from error
        self.url = url
        self.clock = clock
        self.prefix = prefix
        self._redis = redis.asyncio.Redis.from_url(
            url, socket_timeout=2.0, socket_connect_timeout=2.0, decode_responses=True
        )
        self._reserve = self._redis.register_script(_RESERVE)

    def _keys(self, budget: str) -> list[str]:
        return [f"{self.prefix}{budget}:started", f"{self.prefix}{budget}:tokens"]

    async def _call(self, work: Any) -> Any:
        import redis

        try:
            return await work
        except (redis.RedisError, OSError) as error:
            raise StateUnavailableError(
                f"the shared budget state (Redis) cannot be reached: {error}",
                code="state_unavailable",
            ) from error

    async def reserve(
        self, budget: str, request: str, tokens: int, *, limit: int, window_s: float | None
    ) -> Refusal | None:
        args = [self.clock(), window_s or 0, limit, tokens, request]
        ok, spent, retry = await self._call(self._reserve(keys=self._keys(budget), args=args))
        if int(ok):
            return None
        return Refusal(int(spent), float(retry) if window_s else None)

    async def settle(
        self, budget: str, request: str, reserved: int, used: int, window_s: float | None = None
    ) -> None:
        started, tokens = self._keys(budget)
        pipe = self._redis.pipeline(transaction=True)
        if window_s is None:
            pipe.hdel(tokens, request)
            pipe.zrem(started, request)
            pipe.hincrby(tokens, _TOTAL, used)
        else:
            pipe.hset(tokens, request, used)
        await self._call(pipe.execute())

    async def spent(self, budget: str, *, window_s: float | None) -> int:
        started, tokens = self._keys(budget)
        if window_s is None:
            values = await self._call(self._redis.hvals(tokens))
            return sum(int(v) for v in values)
        fresh = await self._call(
            self._redis.zrangebyscore(started, self.clock() - window_s, "+inf")
        )
        if not fresh:
            return 0
        values = await self._call(self._redis.hmget(tokens, fresh))
        return sum(int(v) for v in values if v is not None)

    async def close(self) -> None:
        await self._redis.aclose()
