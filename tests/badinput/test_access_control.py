"""Access control on real processes: keys on every route but /health (Bearer or x-api-key), a
separate admin key, the neuron's token on its admin routes, per-key concurrency and rate limits
(429 with Retry-After), CORS only when configured, metrics only on their own listener, and no
key ever in a log line or a metric."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from cortex.config import LimitsConfig
from cortex.gateway.auth import KeyRing
from cortex.gateway.limits import KeyLimiter
from cortex.testing import (
    GatewayProcess,
    NeuronProcess,
    start_gateway_process,
    start_neuron_process,
)
from tests.faults.servers import (
    ADMIN,
    ADMIN_KEY,
    ANTHROPIC,
    API,
    KEY,
    gateway_config,
    is_anthropic_error,
    is_openai_error,
    sse_events,
)
from tests.helpers import chat, message

from .conftest import NODE_TOKEN, Stack

pytestmark = pytest.mark.e2e

OTHER_KEY = "sk-faults-other"
WRONG_KEY = "sk-wrong-key-that-must-not-be-logged"
ORIGIN = "https://app.example"
ROUTES = [
    ("GET", "/"),
    ("HEAD", "/"),
    ("GET", "/api/hello"),
    ("GET", "/v1/models"),
    ("GET", "/v1/models/m1"),
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/completions"),
    ("POST", "/v1/messages"),
    ("POST", "/v1/messages/count_tokens"),
    ("POST", "/v1/responses"),
    ("GET", "/openapi.json"),
    ("GET", "/admin/status"),
    ("POST", "/admin/models/load"),
    ("POST", "/admin/models/unload"),
    ("POST", "/admin/models/pull"),
    ("GET", "/admin/placement"),
    ("GET", "/metrics"),
    ("GET", "/no/such/route"),
]


@pytest.mark.parametrize(("method", "path"), ROUTES)
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"x-api-key": WRONG_KEY},
        {"authorization": f"Bearer {WRONG_KEY}"},
        {"authorization": f"Basic {KEY}"},  # the right key in the wrong scheme
        {"authorization": KEY},
    ],
    ids=["none", "wrong-x-api-key", "wrong-bearer", "basic-scheme", "no-scheme"],
)
def test_every_route_but_health_needs_a_key(
    stack: Stack, method: str, path: str, headers: dict[str, str]
) -> None:
    url = stack.gateway.url + path
    response = httpx.request(method, url, headers=headers, params={"api_key": KEY}, timeout=10)
    assert response.status_code == 401, (method, path, response.text[:200])
    assert response.headers["www-authenticate"] == "Bearer"
    if method != "HEAD":
        body = response.json()
        assert (
            is_anthropic_error(body) if path.startswith("/v1/messages") else is_openai_error(body)
        )
    assert httpx.get(f"{stack.gateway.url}/health", timeout=10).status_code == 200


def test_bearer_and_x_api_key_open_the_api_and_only_the_admin_key_opens_admin(
    stack: Stack,
) -> None:
    url = stack.gateway.url
    for headers in (API, {"authorization": f"Bearer {KEY}"}, {"Authorization": f"bearer {KEY}"}):
        assert httpx.get(f"{url}/v1/models", headers=headers, timeout=10).status_code == 200
        assert httpx.get(f"{url}/admin/status", headers=headers, timeout=10).status_code == 401
    for headers in (ADMIN, {"x-api-key": ADMIN_KEY}):
        assert httpx.get(f"{url}/admin/status", headers=headers, timeout=10).status_code == 200
        assert httpx.get(f"{url}/v1/models", headers=headers, timeout=10).status_code == 401


def test_metrics_are_only_on_their_own_listener(stack: Stack) -> None:
    on_api = httpx.get(f"{stack.gateway.url}/metrics", headers=API, timeout=10)
    assert on_api.status_code == 404 and is_openai_error(on_api.json())
    scraped = httpx.get(f"{stack.gateway.metrics_url}/metrics", timeout=10)
    assert scraped.status_code == 200 and "cortex_requests_total" in scraped.text
    api_there = httpx.get(f"{stack.gateway.metrics_url}/v1/models", headers=API, timeout=10)
    assert api_there.status_code == 404


def test_cors_is_off_unless_configured(stack: Stack) -> None:
    preflight = httpx.options(
        f"{stack.gateway.url}/v1/chat/completions",
        headers={"origin": ORIGIN, "access-control-request-method": "POST"},
        timeout=10,
    )
    assert preflight.status_code >= 400
    assert not any(k.startswith("access-control-") for k in preflight.headers)
    plain = httpx.get(f"{stack.gateway.url}/v1/models", headers={**API, "origin": ORIGIN})
    assert plain.status_code == 200
    assert not any(k.startswith("access-control-") for k in plain.headers)


def test_the_neuron_token_guards_every_route_but_health(stack: Stack) -> None:
    url = stack.neuron.url
    for headers in ({}, {"authorization": "Bearer nope"}, {"x-api-key": NODE_TOKEN}):
        for path in ("/models/load", "/models/unload", "/models/pull"):
            body = {"model": "m1", "source": "hf:org/m1"}
            refused = httpx.post(url + path, json=body, headers=headers, timeout=10)
            assert refused.status_code == 401 and is_openai_error(refused.json())
        # inference too: anyone reaching the port would bypass the gateway's keys and limits
        refused = httpx.post(f"{url}/v1/chat/completions", json=chat("m1"), headers=headers)
        assert refused.status_code == 401 and is_openai_error(refused.json())
    assert httpx.get(f"{url}/health", timeout=10).status_code == 200
    token = {"authorization": f"Bearer {NODE_TOKEN}"}
    assert httpx.post(f"{url}/models/load", json={"model": "m1"}, headers=token).status_code == 200
    served = httpx.post(f"{url}/v1/chat/completions", json=chat("m1"), headers=token, timeout=10)
    assert served.status_code == 200


def test_the_key_ring_holds_digests_and_compares_every_key() -> None:
    ring = KeyRing(["short", "a-much-longer-key"], ["admin"])
    assert all(len(k) == 32 for k in ring.keys + ring.admin_keys)  # SHA-256, never the keys
    assert b"short" not in b"".join(ring.keys)
    assert ring.accepts("short", admin=False) and ring.accepts("a-much-longer-key", admin=False)
    for given in ("shor", "short ", "shortt", "", None, "admin"):
        assert not ring.accepts(given, admin=False)
    assert ring.accepts("admin", admin=True) and not ring.accepts("short", admin=True)
    assert KeyRing().accepts(None, admin=False)  # no keys: open


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_key_limiter_refills_and_counts_in_flight() -> None:
    clock = Clock()
    limiter = KeyLimiter(
        LimitsConfig(concurrent_requests=2, requests_per_minute=60, burst=3), clock=clock
    )
    for _ in range(2):
        limiter.acquire("k")
    with pytest.raises(Exception, match="in flight") as busy:
        limiter.acquire("k")
    assert busy.value.retry_after_s == 1.0  # type: ignore[attr-defined]
    limiter.acquire("other")  # limits are per key
    limiter.release("k")
    limiter.release("k")
    limiter.acquire("k")  # the third of the burst of 3
    limiter.release("k")
    with pytest.raises(Exception, match="rate limit") as fast:
        limiter.acquire("k")
    assert fast.value.retry_after_s == 1  # type: ignore[attr-defined]  # 60/min: 1 s
    clock.now += 1.0
    limiter.acquire("k")
    assert limiter.in_flight("k") == 1


@dataclass
class Limited:
    gateway: GatewayProcess
    neuron: NeuronProcess


@pytest.fixture(scope="module")
def limited() -> Iterator[Limited]:
    """A gateway with limits (2 in flight, 30/min with a burst of 6 per key), CORS for one
    origin, two API keys, and debug logging (the most it ever writes)."""
    neuron = start_neuron_process(
        {
            "name": "a",
            "memory_mb": 2000.0,
            "preload": ["m1"],
            "token": NODE_TOKEN,
            "fake": {"tokens_per_s": 30.0, "models": [{"id": "m1", "memory_mb": 400.0}]},
        }
    )
    config = gateway_config({"a": neuron}, cors_origins=[ORIGIN])
    config["neurons"][0]["token"] = NODE_TOKEN
    config["auth"]["keys"].append(OTHER_KEY)
    config["limits"] = {"concurrent_requests": 2, "requests_per_minute": 30, "burst": 6}
    gateway = start_gateway_process(config, args=["--log-level", "debug"])
    yield Limited(gateway, neuron)
    gateway.stop()
    neuron.stop()


def _long_streams(url: str, count: int) -> tuple[threading.Barrier, list[threading.Thread]]:
    started = threading.Barrier(count + 1)

    def stream() -> None:
        body = chat("m1", " ".join(["word"] * 60), stream=True)
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, headers=API) as r:
            for i, _ in enumerate(sse_events(r)):
                if i == 1:
                    started.wait(30)

    threads = [threading.Thread(target=stream) for _ in range(count)]
    for thread in threads:
        thread.start()
    return started, threads


def test_per_key_concurrency_limit(limited: Limited) -> None:
    url = limited.gateway.url
    started, threads = _long_streams(url, 2)
    started.wait(30)  # this key has two streams in flight
    busy = httpx.post(f"{url}/v1/chat/completions", json=chat("m1"), headers=API, timeout=10)
    assert busy.status_code == 429 and busy.headers["retry-after"] == "1"
    assert is_openai_error(busy.json()) and "in flight" in busy.json()["error"]["message"]
    anthropic = httpx.post(
        f"{url}/v1/messages", json=message("m1"), headers={**ANTHROPIC}, timeout=10
    )
    assert anthropic.status_code == 429
    assert anthropic.json()["error"]["type"] == "rate_limit_error"
    other = httpx.post(
        f"{url}/v1/chat/completions", json=chat("m1"), headers={"x-api-key": OTHER_KEY}, timeout=30
    )
    assert other.status_code == 200  # another key is not held back
    for thread in threads:
        thread.join(60)
    again = httpx.post(f"{url}/v1/chat/completions", json=chat("m1"), headers=API, timeout=30)
    assert again.status_code == 200


def test_per_key_rate_limit(limited: Limited) -> None:
    url = limited.gateway.url
    key = {"authorization": f"Bearer {OTHER_KEY}"}
    statuses = []
    for _ in range(8):
        got = httpx.get(f"{url}/v1/models", headers=key, timeout=10)
        statuses.append(got.status_code)
        if got.status_code == 429:
            assert 1 <= int(got.headers["retry-after"]) <= 2  # 30/min: one every 2 s
            assert "rate limit" in got.json()["error"]["message"]
    assert 429 in statuses and statuses[0] == 200
    assert httpx.get(f"{url}/v1/models", headers=API, timeout=10).status_code == 200


def test_cors_when_configured(limited: Limited) -> None:
    url = f"{limited.gateway.url}/v1/chat/completions"
    ask = {"access-control-request-method": "POST", "access-control-request-headers": "x-api-key"}
    allowed = httpx.options(url, headers={"origin": ORIGIN, **ask}, timeout=10)
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == ORIGIN
    stranger = httpx.options(url, headers={"origin": "https://evil.example", **ask}, timeout=10)
    assert stranger.status_code == 400
    assert "access-control-allow-origin" not in stranger.headers
    reply = httpx.get(f"{limited.gateway.url}/v1/models", headers={**API, "origin": ORIGIN})
    assert reply.headers["access-control-allow-origin"] == ORIGIN
    assert "retry-after" in reply.headers["access-control-expose-headers"]


def test_keys_never_reach_logs_or_metrics(limited: Limited, stack: Stack) -> None:
    for gateway in (limited.gateway, stack.gateway):
        for headers in ({"x-api-key": WRONG_KEY}, API, {"authorization": f"Bearer {OTHER_KEY}"}):
            httpx.post(f"{gateway.url}/v1/chat/completions", json=chat("m1"), headers=headers)
            httpx.post(f"{gateway.url}/v1/chat/completions", json=chat("nope"), headers=headers)
        httpx.get(f"{gateway.url}/admin/status", headers=ADMIN)
        scraped = httpx.get(f"{gateway.metrics_url}/metrics", timeout=10).text
        logs = gateway.logs() + limited.neuron.logs() + stack.neuron.logs()
        for secret in (KEY, OTHER_KEY, ADMIN_KEY, WRONG_KEY, NODE_TOKEN):
            assert secret not in scraped
            assert secret not in logs
    assert "DEBUG" in limited.gateway.logs()  # the most verbose log had its chance
