"""The web dashboard: static files at `/ui`, and the JSON it polls at `GET /admin/dashboard`.

The page (`cortex/gateway/ui/`: one HTML file, one script, one stylesheet; no build step) asks
for the admin key when the gateway has keys, keeps it in the browser's session storage only,
and polls `/admin/dashboard` every two seconds. It acts through the admin API (load, unload,
pin, unpin, cordon, uncordon, drain, placement dry run), each action confirmed first.

`GET /admin/dashboard` answers what `GET /admin/status` does, plus per model the gateway's own
measurements since it started (`stats`: requests, TTFT p50/p95, generation speed p50, from its
Prometheus histograms, the quantiles estimated the way PromQL's `histogram_quantile` does), and
`recent`: the last requests (time, dialect, model, node, status, TTFT, tokens, duration; never
prompt text). The static files are served without a key (they hold no data); the JSON needs the
admin key like every `/admin` route.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Iterable
from importlib import resources
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from cortex.errors import NotFoundError
from cortex.gateway.admin import AdminAPI
from cortex.gateway.metrics import GatewayMetrics

__all__ = ["Dashboard", "histogram_quantile"]

_FILES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
_SECURITY = {
    "content-security-policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "cache-control": "no-cache",
}


class Dashboard:
    """The dashboard of one gateway app.

    Args:
        admin: the app's admin API (status, and the actions the buttons call).
        metrics: the app's metrics (histograms for the per-model figures, recent requests).
    """

    def __init__(self, admin: AdminAPI, metrics: GatewayMetrics) -> None:
        self.admin = admin
        self.metrics = metrics

    def routes(self) -> list[Route]:
        """`/ui`, its static files, and `GET /admin/dashboard`."""
        return [
            Route("/ui", self.page, methods=["GET"]),
            Route("/ui/{file}", self.static, methods=["GET"]),
            Route("/admin/dashboard", self.data, methods=["GET"]),
        ]

    async def page(self, request: Request) -> Response:
        return RedirectResponse("/ui/index.html", status_code=307)

    async def static(self, request: Request) -> Response:
        name = request.path_params["file"]
        if name not in _FILES:
            raise NotFoundError(f"no file {name!r} in the dashboard")
        body = resources.files("cortex.gateway").joinpath("ui", name).read_bytes()
        return Response(body, media_type=_FILES[name], headers=_SECURITY)

    async def data(self, request: Request) -> Response:
        """Everything the page shows, in one JSON object."""
        data = self.admin.status_data()
        stats = model_stats(self.metrics)
        for model in data["models"]:
            model["stats"] = stats.get(model["id"], {})
        data["recent"] = list(reversed(self.metrics.recent))
        data["generated_at"] = time.time()
        return JSONResponse(data)


def model_stats(metrics: GatewayMetrics) -> dict[str, dict[str, Any]]:
    """Per model: requests answered, TTFT p50/p95 (s), generation speed p50 (tokens/s)."""
    out: dict[str, dict[str, Any]] = defaultdict(dict)
    for model, count in _by_model(metrics, "cortex_requests_total", sum_of="value").items():
        out[model]["requests"] = int(count)
    ttft = _buckets(metrics, "cortex_time_to_first_token_seconds")
    speed = _buckets(metrics, "cortex_tokens_per_second")
    for model, buckets in ttft.items():
        out[model]["ttft_p50_s"] = histogram_quantile(0.5, buckets)
        out[model]["ttft_p95_s"] = histogram_quantile(0.95, buckets)
    for model, buckets in speed.items():
        out[model]["tokens_per_s_p50"] = histogram_quantile(0.5, buckets)
    return dict(out)


def histogram_quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float | None:
    """The `q` quantile of a cumulative histogram `[(upper bound, count), ...]`, interpolated
    linearly inside its bucket as PromQL does; None when it holds no observation."""
    ordered = sorted(buckets)
    if not ordered or ordered[-1][1] <= 0:
        return None
    rank = q * ordered[-1][1]
    lower, below = 0.0, 0.0
    for bound, count in ordered:
        if count >= rank:
            if math.isinf(bound):
                return lower  # in the open top bucket: its lower bound, as PromQL answers
            if count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return ordered[-1][0]


def _samples(metrics: GatewayMetrics, name: str) -> Iterable[Any]:
    for family in metrics.registry.collect():
        for sample in family.samples:
            if sample.name == name:
                yield sample


def _by_model(metrics: GatewayMetrics, name: str, *, sum_of: str) -> dict[str, float]:
    totals: dict[str, float] = defaultdict(float)
    for sample in _samples(metrics, name):
        totals[sample.labels["model"]] += getattr(sample, sum_of)
    return totals


def _buckets(metrics: GatewayMetrics, name: str) -> dict[str, list[tuple[float, float]]]:
    """A histogram's cumulative buckets per model, summed over nodes."""
    per_model: dict[str, dict[float, float]] = defaultdict(lambda: defaultdict(float))
    for sample in _samples(metrics, f"{name}_bucket"):
        bound = float(sample.labels["le"])
        per_model[sample.labels["model"]][bound] += sample.value
    return {model: sorted(b.items()) for model, b in per_model.items()}
