"""The gateway: one OpenAI + Anthropic API in front of a `Fleet`, with Prometheus metrics.

`create_gateway_app(fleet)` is the API's app, `create_metrics_app(metrics)` the metrics
listener's; `cortex.gateway.server` runs both (`cortex-gateway`, `cortex serve`).
"""

from __future__ import annotations

from cortex.gateway.app import create_gateway_app
from cortex.gateway.metrics import GatewayMetrics, create_metrics_app

__all__ = ["GatewayMetrics", "create_gateway_app", "create_metrics_app"]
