"""The access log: one line per request with ids, model, node, status, TTFT, tokens, duration
(plain or JSON, never the key or the prompt); and the gateway's own process metrics."""

from __future__ import annotations

import json
import logging

import pytest

from cortex.config import AuthConfig
from cortex.gateway.access_log import JSONFormatter, key_id

from .conftest import KEY, local_gateway

SECRET_PROMPT = "my secret prompt text"


async def test_one_line_per_request_plain_and_json(caplog: pytest.LogCaptureFixture) -> None:
    gateway, close = await local_gateway(auth=AuthConfig(keys=[KEY]))
    try:
        caplog.set_level(logging.INFO, logger="cortex.access")
        headers = {"x-api-key": KEY}
        body = {"model": "m1", "messages": [{"role": "user", "content": SECRET_PROMPT}]}
        reply = await gateway.client.post("/v1/chat/completions", json=body, headers=headers)
        streamed = await gateway.client.post(
            "/v1/messages",
            json={**body, "max_tokens": 50, "stream": True},
            headers={**headers, "anthropic-version": "2023-06-01"},
        )
        refused = await gateway.client.get("/v1/models")
        await gateway.client.get("/health")  # probes are not logged
    finally:
        await close()
    records = [r for r in caplog.records if r.name == "cortex.access"]
    assert len(records) == 3
    chat, stream, denied = (r.access for r in records)  # type: ignore[attr-defined]
    assert chat["request_id"] == reply.headers["x-request-id"]
    assert chat["key_id"] == key_id(KEY) and KEY not in records[0].getMessage()
    assert (chat["dialect"], chat["model"], chat["node"], chat["status"]) == (
        "openai",
        "m1",
        "a",
        200,
    )
    assert chat["prompt_tokens"] > 0 and chat["completion_tokens"] > 0 and chat["duration_ms"] > 0
    assert stream["dialect"] == "anthropic" and stream["status"] == streamed.status_code == 200
    assert stream["ttft_ms"] is not None and stream["completion_tokens"] > 0
    assert denied["status"] == refused.status_code == 401 and denied["key_id"] is None
    line = records[0].getMessage()
    assert line.startswith("POST /v1/chat/completions ") and "model=m1 node=a status=200" in line
    as_json = json.loads(JSONFormatter().format(records[1]))
    assert as_json["logger"] == "cortex.access" and as_json["model"] == "m1"
    for record in records:
        assert SECRET_PROMPT not in record.getMessage() + JSONFormatter().format(record)


async def test_the_gateway_exports_build_info_process_and_queue_time() -> None:
    gateway, close = await local_gateway()
    try:
        body = {"model": "m1", "messages": [{"role": "user", "content": "hi"}]}
        assert (await gateway.client.post("/v1/chat/completions", json=body)).status_code == 200
        text = gateway.metrics.exposition().decode()
    finally:
        await close()
    assert 'cortex_build_info{python="' in text
    assert "process_resident_memory_bytes" in text
    assert 'cortex_request_queue_seconds_count{model="m1",node="a"} 1.0' in text
