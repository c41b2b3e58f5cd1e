"""Conditional GETs for the neuron's polled routes (`/status`, `/models`): an ETag per answer,
and `304 Not Modified` with no body when the poller's `If-None-Match` still matches.

The gateway polls every node every interval; with hundreds of models the answers are large and
almost always the same. The tag is a hash of the answer without its clock and telemetry fields
(`uptime_s`; the devices' memory and utilization, which move all the time and decide nothing),
so an idle node answers 304 and the gateway parses nothing (`NeuronClient.fetch`, which asks
unconditionally every few polls so that device figures stay fresh).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

__all__ = ["conditional_json"]


def conditional_json(
    request: Request, data: Mapping[str, Any], *, volatile: Collection[str] = ("uptime_s",)
) -> Response:
    """`data` as JSON with an `etag` (over everything but its `volatile` keys), or a bodiless
    304 when the request's `If-None-Match` names that tag."""
    stable = {k: v for k, v in data.items() if k not in volatile}
    stable_body = json.dumps(stable, separators=(",", ":")).encode()
    etag = '"' + hashlib.blake2b(stable_body, digest_size=12).hexdigest() + '"'
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers={"etag": etag})
    body = stable_body if len(stable) == len(data) else json.dumps(data).encode()
    return Response(body, media_type="application/json", headers={"etag": etag})
