"""Token budgets per key: the SQLite state on its own, then real `cortex-gateway` processes over
a fake neuron: one on SQLite, two sharing a real `redis-server` (the cap holds across both;
Redis going away fails closed with 503, and its return recovers)."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from cortex.cli import main
from cortex.gateway.budgets import key_id
from cortex.gateway.state import SqliteState
from cortex.testing import (
    GatewayProcess,
    NeuronProcess,
    free_port,
    start_gateway_process,
    start_neuron_process,
)

KEY = "sk-budget-key"
FREE_KEY = "sk-free-key"
ASK: Any = [{"role": "user", "content": "count to ten"}]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_sqlite_state_rolling_window_and_balance(tmp_path: Path) -> None:
    clock = Clock()
    state = SqliteState(tmp_path / "b.sqlite3", clock=clock)

    async def scenario() -> None:
        assert await state.reserve("k", "r1", 60, limit=100, window_s=60) is None
        clock.now += 10
        assert await state.reserve("k", "r2", 30, limit=100, window_s=60) is None
        refusal = await state.reserve("k", "r3", 30, limit=100, window_s=60)
        assert refusal is not None and refusal.spent == 90
        assert refusal.retry_after_s == 50  # r1 (at 1000) leaves the window at 1060
        await state.settle("k", "r1", 60, 20, 60)  # it used less than reserved
        assert await state.reserve("k", "r3", 30, limit=100, window_s=60) is None
        clock.now += 55
        assert await state.spent("k", window_s=60) == 60  # r1 is gone: r2 + r3 remain
        # A balance: settled spend folds into one total and never leaves.
        assert await state.reserve("b", "x", 50, limit=80, window_s=None) is None
        await state.settle("b", "x", 50, 45, None)
        clock.now += 10_000
        assert await state.spent("b", window_s=None) == 45
        refusal = await state.reserve("b", "y", 40, limit=80, window_s=None)
        assert refusal is not None and refusal.retry_after_s is None
        await state.close()

    asyncio.run(scenario())


@pytest.fixture(scope="module")
def neuron() -> Iterator[NeuronProcess]:
    config = {
        "name": "a",
        "memory_mb": 2000.0,
        "fake": {
            "tokens_per_s": 2000.0,
            "models": [{"id": "m1", "memory_mb": 400.0, "context_length": 4096}],
        },
    }
    with start_neuron_process(config) as process:
        yield process


def _config(neuron: NeuronProcess, state: dict[str, Any], budget: dict[str, Any]) -> Any:
    return {
        "gateway": {"poll_interval_s": 0.5},
        "auth": {"keys": [KEY, FREE_KEY], "budgets": [budget]},
        "state": state,
        "neurons": [{"name": "a", "endpoint": neuron.url}],
    }


def _oai(gateway: GatewayProcess, key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0, timeout=30)


def test_a_balance_is_spent_then_refused_in_each_dialect(
    neuron: NeuronProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    budget = {"key_id": key_id(KEY), "tokens": 120, "window": "balance"}
    gateway = start_gateway_process(
        _config(neuron, {"sqlite_path": str(tmp_path / "b.db")}, budget)
    )
    try:
        client = _oai(gateway)
        spent = 0
        with pytest.raises(openai.RateLimitError) as caught:
            for _ in range(20):
                reply = client.chat.completions.create(model="m1", messages=ASK, max_tokens=10)
                assert reply.usage is not None
                spent += reply.usage.total_tokens
        assert spent <= 120
        body: Any = caught.value.body
        assert body["type"] == "insufficient_quota" and body["code"] == "insufficient_quota"
        # Another key is not limited; the Anthropic dialect gets its own 429.
        assert _oai(gateway, FREE_KEY).chat.completions.create(
            model="m1", messages=ASK, max_tokens=10
        )
        claude = anthropic.Anthropic(base_url=gateway.url, api_key=KEY, max_retries=0)
        with pytest.raises(anthropic.RateLimitError):
            claude.messages.create(model="m1", max_tokens=10, messages=ASK)
        # The admin view (what `cortex keys usage` prints) shows what was settled.
        usage = httpx.get(f"{gateway.url}/admin/budgets", headers={"x-api-key": KEY}).json()
        assert usage["budgets"][0]["spent"] == spent
        argv = ["keys", "usage", "--url", gateway.url, "--admin-key", KEY, "--json"]
        assert main(argv) == 0
        printed = json.loads(capsys.readouterr().out)
        assert printed[0]["key_id"] == key_id(KEY)
        assert (printed[0]["spent"], printed[0]["window"]) == (spent, "balance")
    finally:
        gateway.stop()


def test_a_client_gone_mid_stream_is_charged_for_what_was_streamed(tmp_path: Path) -> None:
    slow = {  # 4000 tokens at 20 tok/s: the client surely leaves long before the end
        "name": "a",
        "memory_mb": 2000.0,
        "fake": {"tokens_per_s": 20.0, "models": [{"id": "m1", "memory_mb": 400.0}]},
    }
    neuron = start_neuron_process(slow)
    budget = {"key": KEY, "tokens": 100_000, "window": "rolling", "seconds": 3600}
    try:
        gateway = start_gateway_process(
            _config(neuron, {"sqlite_path": str(tmp_path / "d.db")}, budget)
        )
    except BaseException:
        neuron.stop()
        raise
    try:
        body = {"model": "m1", "messages": ASK, "max_tokens": 4000, "stream": True}
        body["ignore_eos"] = True  # the fake keeps talking to max_tokens
        headers = {"authorization": f"Bearer {KEY}"}
        with httpx.stream(
            "POST", f"{gateway.url}/v1/chat/completions", json=body, headers=headers
        ) as response:
            chunks = 0
            for line in response.iter_lines():
                chunks += line.startswith("data: ")
                if chunks == 5:
                    break  # the client leaves
        deadline = time.monotonic() + 10
        spent = 0
        while time.monotonic() < deadline:
            rows = httpx.get(f"{gateway.url}/admin/budgets", headers=headers).json()["budgets"]
            spent = rows[0]["spent"]
            if spent < 4000:  # settled: no longer the whole reservation
                break
            time.sleep(0.1)
        assert 0 < spent < 4000
    finally:
        gateway.stop()
        neuron.stop()


class Redis:
    """A `redis-server` on a free loopback port, started and stopped by PID."""

    def __init__(self, port: int, folder: Path) -> None:
        self.port = port
        self.folder = folder
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--save", "", "--appendonly", "no", "--dir", str(self.folder)]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, cwd=self.folder)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                import socket

                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[Redis]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (scripts/debian-packages.txt)")
    server = Redis(free_port(), tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.e2e
def test_two_gateways_share_one_cap_through_redis(neuron: NeuronProcess, redis: Redis) -> None:
    state = {"redis_url": f"redis://127.0.0.1:{redis.port}/0"}
    budget = {"key": KEY, "tokens": 150, "window": "rolling", "seconds": 3600}
    gateways = [start_gateway_process(_config(neuron, state, budget)) for _ in range(2)]
    try:
        clients = [_oai(g) for g in gateways]
        spent, refused = 0, None
        for turn in range(20):
            try:
                reply = clients[turn % 2].chat.completions.create(
                    model="m1", messages=ASK, max_tokens=10
                )
            except openai.RateLimitError as error:
                refused = error
                break
            assert reply.usage is not None
            spent += reply.usage.total_tokens
        assert refused is not None and spent <= 150
        assert turn >= 2  # both gateways answered before the shared cap was reached
        body: Any = refused.body
        assert body["code"] == "rate_limit_exceeded"
        assert int(refused.response.headers["retry-after"]) >= 1
        # The other gateway refuses too: the spend is shared.
        with pytest.raises(openai.RateLimitError):
            clients[(turn + 1) % 2].chat.completions.create(model="m1", messages=ASK, max_tokens=10)

        redis.stop()  # fail closed while the state is away
        with pytest.raises(openai.APIStatusError) as caught:
            clients[0].chat.completions.create(model="m1", messages=ASK, max_tokens=10)
        assert caught.value.status_code == 503
        # Keys without a budget are not held up by it.
        assert _oai(gateways[0], FREE_KEY).chat.completions.create(
            model="m1", messages=ASK, max_tokens=10
        )

        redis.start()  # back (empty: this one keeps nothing on disk): requests run again
        assert clients[1].chat.completions.create(model="m1", messages=ASK, max_tokens=10)
    finally:
        for gateway in gateways:
            gateway.stop()


@pytest.mark.e2e
def test_two_gateways_share_the_request_rate_limit_through_redis(
    neuron: NeuronProcess, redis: Redis
) -> None:
    config = {
        "gateway": {"poll_interval_s": 0.5},
        "auth": {"keys": [KEY]},
        "limits": {"requests_per_minute": 1, "burst": 3},
        "state": {"redis_url": f"redis://127.0.0.1:{redis.port}/0"},
        "neurons": [{"name": "a", "endpoint": neuron.url}],
    }
    gateways = [start_gateway_process(config) for _ in range(2)]
    try:
        clients = [_oai(g) for g in gateways]
        for turn in range(3):  # the burst, taken on both gateways
            clients[turn % 2].chat.completions.create(model="m1", messages=ASK, max_tokens=2)
        for client in clients:  # each gateway alone would still allow 1 or 2 more
            with pytest.raises(openai.RateLimitError) as caught:
                client.chat.completions.create(model="m1", messages=ASK, max_tokens=2)
            assert int(caught.value.response.headers["retry-after"]) >= 1
        redis.stop()
        with pytest.raises(openai.APIStatusError) as down:
            clients[0].chat.completions.create(model="m1", messages=ASK, max_tokens=2)
        assert down.value.status_code == 503
    finally:
        for gateway in gateways:
            gateway.stop()


@pytest.mark.e2e
def test_two_gateways_share_the_concurrency_limit_through_redis(redis: Redis) -> None:
    slow = {  # 4000 tokens at 20 tok/s: the first stream is surely still running
        "name": "a",
        "memory_mb": 2000.0,
        "fake": {"tokens_per_s": 20.0, "models": [{"id": "m1", "memory_mb": 400.0}]},
    }
    neuron = start_neuron_process(slow)
    config = {
        "gateway": {"poll_interval_s": 0.5},
        "auth": {"keys": [KEY]},
        "limits": {"concurrent_requests": 1},
        "state": {"redis_url": f"redis://127.0.0.1:{redis.port}/0"},
        "neurons": [{"name": "a", "endpoint": neuron.url}],
    }
    gateways: list[GatewayProcess] = []
    try:
        gateways = [start_gateway_process(config) for _ in range(2)]
        body = {"model": "m1", "messages": ASK, "max_tokens": 4000, "stream": True}
        body["ignore_eos"] = True
        headers = {"authorization": f"Bearer {KEY}"}
        url = f"{gateways[0].url}/v1/chat/completions"
        with httpx.stream("POST", url, json=body, headers=headers, timeout=30) as response:
            assert response.status_code == 200
            # Held by a name: a dropped line iterator is collected and closes the connection.
            lines = response.iter_lines()
            assert next(lines).startswith("data: ")  # the stream runs on the first gateway
            # The second gateway counts it: this key's one slot is taken.
            with pytest.raises(openai.RateLimitError) as caught:
                _oai(gateways[1]).chat.completions.create(model="m1", messages=ASK, max_tokens=2)
            assert "in flight" in caught.value.message
        # The client left: its slot is given back, and the second gateway serves the key again.
        deadline = time.monotonic() + 10
        while True:
            try:
                _oai(gateways[1]).chat.completions.create(model="m1", messages=ASK, max_tokens=2)
                break
            except openai.RateLimitError:
                assert time.monotonic() < deadline, "the slot was never given back"
                time.sleep(0.1)
    finally:
        for gateway in gateways:
            gateway.stop()
        neuron.stop()
