"""Token budgets per key: reserve before dispatch, settle from the final usage.

`[[auth.budgets]]` gives a key (or its key id: the first 12 hex digits of the key's SHA-256) a
cap of `tokens` over a `balance` (spent once, for good) or a `rolling` window of `seconds`.
Before a request is sent to a node, its worst case (a prompt estimate plus its `max_tokens`)
is reserved; a reservation that would pass the cap is a 429: `insufficient_quota` for a spent
balance, `rate_limit_exceeded` with `Retry-After` (seconds until enough of the window has
passed) for a rolling window. When the request ends, the reservation is settled to the tokens
the usage reports; a request whose usage never came (the client left mid-stream) is settled
to its prompt estimate plus the tokens streamed before it left.

The spend lives in a `BudgetState` (`cortex.gateway.state`): an SQLite file by default, Redis
when several gateways share one deployment. When the state cannot be reached, requests of keys
with a budget fail closed (503) rather than run unmetered.
"""

from __future__ import annotations

import contextlib
import json
import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cortex.config import BudgetConfig, CortexConfig
from cortex.errors import CortexError, RateLimitError
from cortex.gateway import access_log
from cortex.gateway.state import BudgetState, RedisState, Refusal, SqliteState

__all__ = [
    "Budgets",
    "QuotaExceededError",
    "Reservation",
    "Spend",
    "budgets_from_config",
    "budgets_route",
    "estimate_prompt_tokens",
    "estimate_tokens",
    "key_id",
]

# A reply with no max_tokens may run long; reserve this much for it.
DEFAULT_COMPLETION_RESERVE = 4096


def key_id(key: str) -> str:
    """A key's public id, as the access log shows it: 12 hex digits of its SHA-256."""
    ident = access_log.key_id(key)
    if ident is None:
        raise ValueError("an empty key has no id")
    return ident


class QuotaExceededError(RateLimitError):
    """The key's token balance is spent (429 `insufficient_quota`)."""

    openai_type = "insufficient_quota"


@dataclass(frozen=True)
class Reservation:
    """Tokens held for one request until it settles."""

    budget: str
    request_id: str
    tokens: int
    window_s: float | None = None


def estimate_prompt_tokens(body: Mapping[str, Any]) -> int:
    """A generous estimate of a request's prompt tokens: its characters / 3."""
    prompt = {k: v for k, v in body.items() if k in ("messages", "prompt", "input", "system")}
    return math.ceil(len(json.dumps(prompt, ensure_ascii=False)) / 3)


def estimate_tokens(body: Mapping[str, Any]) -> int:
    """A generous estimate of a request's tokens: `estimate_prompt_tokens` plus the reply's
    `max_tokens` (or `DEFAULT_COMPLETION_RESERVE`)."""
    reply = next(
        (
            int(body[k])
            for k in ("max_completion_tokens", "max_tokens", "max_output_tokens")
            if isinstance(body.get(k), int)
        ),
        DEFAULT_COMPLETION_RESERVE,
    )
    return estimate_prompt_tokens(body) + max(0, reply)


class Budgets:
    """The budgets of `[[auth.budgets]]` over a shared `BudgetState`.

    Args:
        budgets: the configured budgets.
        state: where spend is kept.
    """

    def __init__(self, budgets: Sequence[BudgetConfig], state: BudgetState) -> None:
        self.state = state
        self._by_id: dict[str, BudgetConfig] = {}
        for budget in budgets:
            ident = budget.key_id or key_id(budget.key.get_secret_value() if budget.key else "")
            self._by_id[ident] = budget

    @property
    def active(self) -> bool:
        """Whether any key has a budget."""
        return bool(self._by_id)

    def budget_of(self, key: str | None) -> tuple[str, BudgetConfig] | None:
        """The key's id and budget, or None when it has none."""
        if key is None:
            return None
        ident = key_id(key)
        budget = self._by_id.get(ident)
        return None if budget is None else (ident, budget)

    async def reserve(self, key: str | None, tokens: int) -> Reservation | None:
        """Hold `tokens` of the key's budget (None: the key has no budget).

        Raises:
            QuotaExceededError: a balance that cannot hold them (429 `insufficient_quota`).
            RateLimitError: a rolling window that cannot hold them now (429
                `rate_limit_exceeded`, with Retry-After).
            OverloadedError: the state cannot be reached (503: fail closed).
        """
        found = self.budget_of(key)
        if found is None:
            return None
        ident, budget = found
        request_id = uuid.uuid4().hex
        refusal = await self.state.reserve(
            ident, request_id, tokens, limit=budget.tokens, window_s=_window(budget)
        )
        if refusal is not None:
            raise _refused(budget, refusal, tokens)
        return Reservation(ident, request_id, tokens, _window(budget))

    async def settle(self, reservation: Reservation | None, used: int | None) -> None:
        """Replace the reservation by the tokens used (None: unknown, keep it all)."""
        if reservation is None or used is None:
            return
        # The state gone after the request ran: the reservation stands, never less.
        with contextlib.suppress(CortexError):
            await self.state.settle(
                reservation.budget,
                reservation.request_id,
                reservation.tokens,
                used,
                reservation.window_s,
            )

    async def usage(self) -> list[dict[str, Any]]:
        """Per budget: key id, cap, window and tokens spent in it now (for `cortex keys usage`)."""
        out = []
        for ident, budget in sorted(self._by_id.items()):
            spent = await self.state.spent(ident, window_s=_window(budget))
            out.append(
                {
                    "key_id": ident,
                    "tokens": budget.tokens,
                    "window": budget.window,
                    "seconds": budget.seconds if budget.window == "rolling" else None,
                    "spent": spent,
                    "left": max(0, budget.tokens - spent),
                }
            )
        return out


def _window(budget: BudgetConfig) -> float | None:
    return budget.seconds if budget.window == "rolling" else None


def _refused(budget: BudgetConfig, refusal: Refusal, tokens: int) -> CortexError:
    if budget.window == "balance" or tokens > budget.tokens:
        return QuotaExceededError(
            f"this key's token budget is spent ({refusal.spent} of {budget.tokens} tokens used; "
            f"this request may take {tokens})",
            code="insufficient_quota",
        )
    return RateLimitError(
        f"this key used {refusal.spent} of its {budget.tokens} tokens in the last "
        f"{budget.seconds:g} s; this request may take {tokens}",
        code="rate_limit_exceeded",
        retry_after_s=max(1.0, math.ceil(refusal.retry_after_s or 1.0)),
    )


class Spend:
    """One request's reservation, settled once: from its usage, to nothing when it failed
    before any output, or (a client gone mid-stream, so no usage) to the prompt's estimate plus
    the tokens streamed before it left.

    Args:
        budgets: the budgets it was reserved from.
        reservation: what was reserved (None: the key has no budget; settling does nothing).
        prompt_estimate: the prompt's share of the reservation.
    """

    def __init__(
        self, budgets: Budgets, reservation: Reservation | None, prompt_estimate: int = 0
    ) -> None:
        self.budgets = budgets
        self.reservation = reservation
        self.prompt_estimate = prompt_estimate
        self._settled = False

    async def settle(self, used: int | None) -> None:
        """Settle to `used` tokens (None: keep the reservation); later calls do nothing."""
        if self._settled:
            return
        self._settled = True
        await self.budgets.settle(self.reservation, used)


def default_state_path() -> Path:
    """Where an SQLite budget state lives by default: `~/.cache/cortex/budgets.sqlite3`."""
    return Path.home() / ".cache" / "cortex" / "budgets.sqlite3"


def budgets_from_config(config: CortexConfig) -> Budgets | None:
    """The budgets of a cortex.toml over its `[state]` (None when no key has a budget)."""
    if not config.auth.budgets:
        return None
    state: BudgetState
    if config.state.redis_url is not None:
        state = RedisState(config.state.redis_url.get_secret_value())
    else:
        state = SqliteState(config.state.sqlite_path or default_state_path())
    return Budgets(config.auth.budgets, state)


def budgets_route(budgets: Budgets | None) -> Route:
    """`GET /admin/budgets`: each budget's key id, cap, window and spend (`cortex keys usage`)."""

    async def usage(request: Request) -> Response:
        rows = await budgets.usage() if budgets is not None else []
        return JSONResponse({"budgets": rows})

    return Route("/admin/budgets", usage, methods=["GET"])
