"""The gateway's Prometheus metrics, in one `CollectorRegistry` per app (no globals).

Names as docs/gateway.md ("Metrics") lists them: `cortex_requests_total{model,node,dialect,status}`,
`cortex_tokens_total{model,node,kind}`, `cortex_time_to_first_token_seconds{model,node}`,
`cortex_request_duration_seconds{model,node}`, `cortex_tokens_per_second{model,node}`,
`cortex_inflight_requests{model,node}`, `cortex_model_loads_total{model,node,outcome}`,
`cortex_model_load_seconds{model,node}`, `cortex_evictions_total{model,node,reason}`,
`cortex_node_up{node}`, `cortex_request_queue_seconds{model,node}` (the wait for a node, a
cold load included), `cortex_build_info` and the process's `process_*`. Labels stay bounded:
a model no node knows is `unknown`, a request that never reached a node is `none`.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cortex.build_info import register_process_metrics
from cortex.fleet.events import FleetObserver
from cortex.gateway.access_log import current_entry

__all__ = ["GatewayMetrics", "RequestRecord", "create_metrics_app"]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_RATE_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
_LOAD_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
RECENT = 50
"""Requests kept for the dashboard's recent list."""


class GatewayMetrics(FleetObserver):
    """The metrics of one gateway; also the fleet's observer (loads, evictions, nodes)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "cortex_requests",
            "Requests answered, by model, node, dialect and HTTP status (499: client left).",
            ["model", "node", "dialect", "status"],
            registry=r,
        )
        self.tokens = Counter(
            "cortex_tokens",
            "Tokens processed, by model, node and kind (prompt or completion).",
            ["model", "node", "kind"],
            registry=r,
        )
        self.time_to_first_token = Histogram(
            "cortex_time_to_first_token_seconds",
            "Seconds from a streamed request's arrival to its first content token.",
            ["model", "node"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.request_duration = Histogram(
            "cortex_request_duration_seconds",
            "Seconds from a request's arrival to its last byte.",
            ["model", "node"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens_per_second = Histogram(
            "cortex_tokens_per_second",
            "Completion tokens per second over each streamed generation window.",
            ["model", "node"],
            buckets=_RATE_BUCKETS,
            registry=r,
        )
        self.inflight = Gauge(
            "cortex_inflight_requests",
            "Requests being answered now.",
            ["model", "node"],
            registry=r,
        )
        self.model_loads = Counter(
            "cortex_model_loads",
            "Model loads the gateway asked for, by outcome (ok or error).",
            ["model", "node", "outcome"],
            registry=r,
        )
        self.model_load_seconds = Histogram(
            "cortex_model_load_seconds",
            "Seconds each model load took (evictions before it included).",
            ["model", "node"],
            buckets=_LOAD_BUCKETS,
            registry=r,
        )
        self.evictions = Counter(
            "cortex_evictions",
            "Models unloaded to make room (lru, priority) or to defragment (defrag).",
            ["model", "node", "reason"],
            registry=r,
        )
        self.node_up = Gauge(
            "cortex_node_up", "1 when the node answered its last poll.", ["node"], registry=r
        )
        self.queue_time = Histogram(
            "cortex_request_queue_seconds",
            "Seconds from a request's arrival until a node holds it (a cold load included).",
            ["model", "node"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        register_process_metrics(r)
        self.recent: deque[dict[str, Any]] = deque(maxlen=RECENT)
        """The last requests (no prompt text): what the dashboard lists."""
        self._series: dict[tuple[str, str], _Series] = {}
        self._answered: dict[tuple[str, str, str, int], Any] = {}

    def series(self, model: str, node: str) -> _Series:
        """The per-request series of (model, node), bound once: a label lookup costs about as
        much as the observation itself, and a request makes eight. Labels are bounded (a model
        no node knows is `unknown`), so the cache is too."""
        key = (model, node)
        bound = self._series.get(key)
        if bound is None:
            bound = self._series[key] = _Series(self, model, node)
        return bound

    def answered(self, model: str, node: str, dialect: str, status: int) -> Any:
        """The `cortex_requests_total` child of one answer's labels (bound once)."""
        key = (model, node, dialect, status)
        child = self._answered.get(key)
        if child is None:
            child = self._answered[key] = self.requests.labels(model, node, dialect, str(status))
        return child

    def exposition(self) -> bytes:
        """The metrics in the Prometheus text format."""
        return bytes(generate_latest(self.registry))

    # FleetObserver

    def on_load(self, model: str, node: str, outcome: str, seconds: float) -> None:
        """Count a load and its duration."""
        self.model_loads.labels(model, node, outcome).inc()
        self.model_load_seconds.labels(model, node).observe(seconds)

    def on_eviction(self, model: str, node: str, reason: str) -> None:
        """Count an eviction."""
        self.evictions.labels(model, node, reason).inc()

    def on_node(self, node: str, up: bool) -> None:
        """Set the node's up gauge."""
        self.node_up.labels(node).set(1 if up else 0)


class _Series:
    """The series one request writes, bound to its (model, node)."""

    __slots__ = (
        "completion",
        "duration",
        "inflight",
        "prompt",
        "queue_time",
        "tokens_per_second",
        "ttft",
    )

    def __init__(self, metrics: GatewayMetrics, model: str, node: str) -> None:
        self.duration = metrics.request_duration.labels(model, node)
        self.ttft = metrics.time_to_first_token.labels(model, node)
        self.tokens_per_second = metrics.tokens_per_second.labels(model, node)
        self.prompt = metrics.tokens.labels(model, node, "prompt")
        self.completion = metrics.tokens.labels(model, node, "completion")
        self.queue_time = metrics.queue_time.labels(model, node)
        self.inflight = metrics.inflight.labels(model, node)


class RequestRecord:
    """One request's measurements, written to the metrics once when it ends.

    Call `token()` at each content token of a streamed reply (the first one sets TTFT),
    `usage()` when the reply says what it used, set `status`, and `finish()` at the end,
    whatever happened; `node` is read at the end, so failover can change it until then.
    """

    __slots__ = (
        "access",
        "completion_tokens",
        "dialect",
        "finished",
        "first_token_at",
        "last_token_at",
        "metrics",
        "model",
        "node",
        "prompt_tokens",
        "started",
        "status",
        "streamed_tokens",
    )

    def __init__(
        self, metrics: GatewayMetrics | None, dialect: str, model: str = "unknown"
    ) -> None:
        self.metrics = metrics
        self.dialect = dialect
        self.model = model
        self.node = "none"
        self.started = time.perf_counter()
        self.first_token_at: float | None = None
        self.last_token_at: float | None = None
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.streamed_tokens = 0
        self.status: int = 499  # until told otherwise: the client went away
        self.finished = False
        self.access = current_entry()

    def token(self, count: int = 1) -> None:
        """A content token (or several) went out."""
        now = time.perf_counter()
        if self.first_token_at is None:
            self.first_token_at = now
        self.last_token_at = now
        self.streamed_tokens += count

    def usage(self, usage: Mapping[str, Any] | None) -> None:
        """Take token counts from an OpenAI `usage` object."""
        if not usage:
            return
        self.prompt_tokens = int(usage.get("prompt_tokens") or 0)
        self.completion_tokens = int(usage.get("completion_tokens") or 0)

    def finish(self, status: int | None = None) -> None:
        """Write the request to the metrics (once), with `status` or the one set on it."""
        if status is not None:
            self.status = status
        if self.finished:
            return
        self.finished = True
        end = time.perf_counter()
        self._write_access()
        if self.metrics is None:
            return
        m, model, node = self.metrics, self.model, self.node
        m.recent.append(self._summary(end))
        m.answered(model, node, self.dialect, self.status).inc()
        series = m.series(model, node)
        series.duration.observe(end - self.started)
        if self.first_token_at is not None:
            series.ttft.observe(self.first_token_at - self.started)
            completion = self.completion_tokens or self.streamed_tokens
            window = end - self.first_token_at
            if completion > 0 and window > 0:
                series.tokens_per_second.observe(completion / window)
        if self.prompt_tokens:
            series.prompt.inc(self.prompt_tokens)
        if self.completion_tokens:
            series.completion.inc(self.completion_tokens)

    def _summary(self, end: float) -> dict[str, Any]:
        ttft = self.first_token_at - self.started if self.first_token_at is not None else None
        return {
            "at": time.time(),
            "dialect": self.dialect,
            "model": self.model,
            "node": self.node,
            "status": self.status,
            "ttft_s": ttft,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens or self.streamed_tokens,
            "duration_s": end - self.started,
        }

    def _write_access(self) -> None:
        entry = self.access
        if entry is None:
            return
        entry.dialect, entry.model, entry.node = self.dialect, self.model, self.node
        if self.first_token_at is not None:
            entry.ttft_ms = round((self.first_token_at - self.started) * 1000.0, 1)
        entry.prompt_tokens = self.prompt_tokens or None
        entry.completion_tokens = self.completion_tokens or self.streamed_tokens or None

    def track(self) -> Callable[[], None]:
        """Count the request in flight on its (model, node) now (a node holds it: its queue
        time ends); returns the undo."""
        if self.metrics is None:
            return lambda: None
        waited = time.perf_counter() - self.started
        series = self.metrics.series(self.model, self.node)
        series.queue_time.observe(waited)
        gauge = series.inflight
        gauge.inc()
        return gauge.dec


def create_metrics_app(metrics: GatewayMetrics) -> Starlette:
    """The app of the metrics listener: `GET /metrics` (and `/` for convenience)."""

    async def scrape(request: Request) -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    return Starlette(
        routes=[Route("/metrics", scrape, methods=["GET"]), Route("/", scrape, methods=["GET"])]
    )
