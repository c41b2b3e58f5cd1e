"""The poller: asks every node for its status at a fixed interval, concurrently.

A node that does not answer within the poll timeout (below the interval) is reported down at
that poll, so one that dies is seen down within two intervals; the next answer brings it back.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence

from cortex.fleet.clients import NodeClient
from cortex.fleet.state import NodeSnapshot

__all__ = ["PollResult", "Poller"]

PollResult = Callable[[str, NodeSnapshot | None, BaseException | None, float], None]


class Poller:
    """Polls `clients` every `interval_s` and hands each answer (or failure) to `on_result`.

    Args:
        clients: the nodes.
        on_result: called with (node name, snapshot, None, started_at) or (node name, None,
            error, started_at), where started_at is the `time.monotonic()` the poll began.
        interval_s: seconds from the start of one round to the start of the next.
        timeout_s: seconds one node may take to answer (at most the interval, its default), so
            a node that stops answering is reported down within two intervals.
    """

    def __init__(
        self,
        clients: Sequence[NodeClient],
        on_result: PollResult,
        *,
        interval_s: float,
        timeout_s: float | None = None,
    ) -> None:
        self.clients = list(clients)
        self.on_result = on_result
        self.interval_s = interval_s
        self.timeout_s = min(timeout_s or interval_s, interval_s)
        self._task: asyncio.Task[None] | None = None
        self.rounds = 0

    async def poll_node(
        self, client: NodeClient, *, timeout_s: float | None = None
    ) -> NodeSnapshot | None:
        """Poll one node now; report and return its snapshot (None when it failed)."""
        started = time.monotonic()
        try:
            snapshot = await asyncio.wait_for(client.fetch(), timeout_s or self.timeout_s)
        except Exception as exc:
            self.on_result(client.name, None, exc, started)
            return None
        self.on_result(client.name, snapshot, None, started)
        return snapshot

    async def poll_once(self, *, timeout_s: float | None = None) -> None:
        """One round: every node at once (`timeout_s` overrides the poll timeout, e.g. at start,
        when a node's first answer may be slow)."""
        await asyncio.gather(*(self.poll_node(c, timeout_s=timeout_s) for c in self.clients))
        self.rounds += 1

    async def _run(self) -> None:
        started = time.monotonic()
        while True:
            await asyncio.sleep(max(0.0, self.interval_s - (time.monotonic() - started)))
            started = time.monotonic()
            await self.poll_once()

    def start(self) -> None:
        """Start polling in the background, a round every interval (call `poll_once` first)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="cortex-poller")

    async def stop(self) -> None:
        """Stop polling."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
