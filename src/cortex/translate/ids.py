"""Ids and timestamps for translated messages, made by a factory the caller passes in."""

from __future__ import annotations

import random
import time
from collections.abc import Callable

__all__ = ["IdFactory"]

_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


class IdFactory:
    """Makes the ids (`msg_...`, `toolu_...`, `chatcmpl-...`, `call_...`) and timestamps.

    Translation is pure: every function that invents an id or reads the time takes an
    `IdFactory`. Give it a `seed` (and a fixed `created`) for reproducible output in tests;
    leave both out in a server, where each request gets random ids and the current time.

    Args:
        seed: seed of the private random generator; `None` draws one from the OS.
        created: a fixed Unix timestamp to return from `created()`.
        clock: where the time comes from when `created` is not fixed (default `time.time`).

    Example:
        >>> ids = IdFactory(seed=1, created=1_700_000_000)
        >>> ids.message_id()[:4], ids.created()
        ('msg_', 1700000000)
    """

    __slots__ = ("_clock", "_created", "_rng")

    def __init__(
        self,
        seed: int | None = None,
        *,
        created: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._rng = random.Random(seed)
        self._created = created
        self._clock = clock

    def new(self, prefix: str, length: int = 24) -> str:
        """A fresh id: `prefix` followed by `length` base-62 characters."""
        return prefix + "".join(self._rng.choices(_ALPHABET, k=length))

    def message_id(self) -> str:
        """An Anthropic message id, `msg_...`."""
        return self.new("msg_")

    def tool_use_id(self) -> str:
        """An Anthropic tool-use id, `toolu_...` (when the upstream gave none)."""
        return self.new("toolu_")

    def chat_completion_id(self) -> str:
        """An OpenAI chat completion id, `chatcmpl-...`."""
        return self.new("chatcmpl-")

    def call_id(self) -> str:
        """An OpenAI tool call id, `call_...` (when the upstream gave none)."""
        return self.new("call_")

    def signature(self) -> str:
        """A synthetic, non-empty thinking signature (local models sign nothing)."""
        return "cortex-" + f"{self._rng.getrandbits(128):032x}"

    def created(self) -> int:
        """The Unix timestamp to stamp on OpenAI objects."""
        if self._created is not None:
            return self._created
        return int(self._clock())
