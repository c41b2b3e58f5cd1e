"""A real `cortex-neuron --harness fake` process: lifecycle, SDK, disconnects, SIGTERM, CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest

from cortex.testing import NeuronProcess, start_neuron_process

from ..helpers import wait_until

pytestmark = pytest.mark.e2e

TOKEN = "fleet-token"
ADMIN = {"authorization": f"Bearer {TOKEN}"}
CONFIG = {
    "name": "fake-node",
    "memory_mb": 1000,
    "token": TOKEN,
    "fake": {
        "load_s": 0.3,
        "tokens_per_s": 40,
        "fail_load": ["broken"],
        "models": [
            {"id": "alpha", "memory_mb": 400, "context_length": 256},
            {"id": "beta", "memory_mb": 700},
            {"id": "broken", "memory_mb": 100},
        ],
    },
}


def metric(url: str, line_start: str) -> float:
    for line in httpx.get(f"{url}/metrics", headers=ADMIN).text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NeuronProcess]:
    with start_neuron_process(CONFIG, workdir=tmp_path_factory.mktemp("fake-node")) as node:
        yield node


def test_lifecycle_over_a_real_process(node: NeuronProcess) -> None:
    url = node.url
    assert httpx.post(f"{url}/models/load", json={"model": "alpha"}).status_code == 401

    with ThreadPoolExecutor(4) as pool:
        loads = list(
            pool.map(
                lambda _: httpx.post(
                    f"{url}/models/load", json={"model": "alpha"}, headers=ADMIN, timeout=10
                ),
                range(4),
            )
        )
    assert [r.status_code for r in loads] == [200] * 4
    assert metric(url, 'cortex_neuron_model_loads_total{model="alpha",outcome="ok"}') == 1.0
    assert httpx.get(f"{url}/status", headers=ADMIN).json()["loads_started"] == 1

    refused = httpx.post(f"{url}/models/load", json={"model": "beta"}, headers=ADMIN)
    assert refused.status_code == 507
    assert (refused.json()["error"]["required_mb"], refused.json()["error"]["free_mb"]) == (
        700,
        600,
    )
    failed = httpx.post(f"{url}/models/load", json={"model": "broken"}, headers=ADMIN)
    assert failed.status_code == 500
    entry = {m["id"]: m for m in httpx.get(f"{url}/models", headers=ADMIN).json()["data"]}["broken"]
    assert entry["state"] == "failed" and "injected" in entry["error"]

    unloaded = httpx.post(f"{url}/models/unload", json={"model": "alpha"}, headers=ADMIN)
    assert unloaded.json()["state"] == "available"
    assert (
        httpx.post(f"{url}/models/load", json={"model": "beta"}, headers=ADMIN).status_code == 200
    )
    assert httpx.get(f"{url}/status", headers=ADMIN).json()["load_cycles"] == 1
    httpx.post(f"{url}/models/unload", json={"model": "beta"}, headers=ADMIN)


def test_chat_through_the_sdk_and_a_disconnect_frees_the_request(node: NeuronProcess) -> None:
    url = node.url
    httpx.post(f"{url}/models/load", json={"model": "alpha"}, headers=ADMIN, timeout=10)
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=TOKEN, max_retries=0)
    reply = client.chat.completions.create(
        model="alpha", messages=[{"role": "user", "content": "ping"}]
    )
    assert reply.choices[0].message.content == "This is alpha on fake-node. You said: ping"
    stream = client.chat.completions.create(
        model="alpha",
        messages=[{"role": "user", "content": "ping"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == (
        reply.choices[0].message.content
    )
    assert chunks[-1].usage is not None

    long_prompt = {
        "model": "alpha",
        "stream": True,
        "messages": [{"role": "user", "content": " ".join(["word"] * 150)}],
    }
    with httpx.stream(
        "POST", f"{url}/v1/chat/completions", json=long_prompt, headers=ADMIN
    ) as response:
        lines = response.iter_lines()
        assert next(lines).startswith("data: ")
        assert httpx.get(f"{url}/status", headers=ADMIN).json()["requests"]["running"] == 1
    # the client went away after one chunk of a ~4 s reply: the neuron stops generating
    wait_until(lambda: httpx.get(f"{url}/status", headers=ADMIN).json()["requests"]["running"] == 0)
    status_499 = 'cortex_neuron_requests_total{endpoint="/v1/chat/completions",model="alpha",'
    wait_until(lambda: metric(url, status_499 + 'status="499"}') == 1.0)


def test_sigterm_lets_a_running_stream_finish(tmp_path: Path) -> None:
    with start_neuron_process(CONFIG, workdir=tmp_path) as node:
        httpx.post(f"{node.url}/models/load", json={"model": "alpha"}, headers=ADMIN, timeout=10)
        body = {"model": "alpha", "stream": True, "messages": [{"role": "user", "content": "a b"}]}
        with httpx.stream(
            "POST", f"{node.url}/v1/chat/completions", json=body, headers=ADMIN
        ) as response:
            lines = response.iter_lines()
            first = next(lines)
            node.process.terminate()
            rest = [line for line in lines if line]
        payloads = [first, *rest]
        assert payloads[-1] == "data: [DONE]"
        text = "".join(
            json.loads(p[6:])["choices"][0]["delta"].get("content") or ""
            for p in payloads[:-1]
            if json.loads(p[6:])["choices"]
        )
        assert text == "This is alpha on fake-node. You said: a b"
        assert node.process.wait(10) in (0, -15)
        assert "Application shutdown complete" in node.logs()


def test_kill_9_stops_the_process_at_once(tmp_path: Path) -> None:
    node = start_neuron_process(CONFIG, workdir=tmp_path)
    assert node.kill() == -9
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{node.url}/health", timeout=1)


def test_flags_override_the_config_file(tmp_path: Path) -> None:
    with start_neuron_process(
        CONFIG, workdir=tmp_path, args=["--name", "renamed", "--memory-mb", "50"]
    ) as node:
        status = httpx.get(f"{node.url}/status", headers=ADMIN).json()
        assert status["name"] == "renamed"
        assert status["memory"]["limit_mb"] == 50
        refused = httpx.post(f"{node.url}/models/load", json={"model": "alpha"}, headers=ADMIN)
        assert refused.status_code == 507


def test_the_command_line_reports_bad_config_and_its_version(tmp_path: Path) -> None:
    bad = tmp_path / "neuron.toml"
    bad.write_text('memory_mb = "lots"\n')
    command = [sys.executable, "-m", "cortex.neuron", "--config", str(bad)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "neuron.toml:1: memory_mb:" in result.stderr
    flag = subprocess.run(
        [sys.executable, "-m", "cortex.neuron", "--device", "tpu"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert flag.returncode == 2 and "--device" in flag.stderr
    version = subprocess.run(
        [sys.executable, "-m", "cortex.neuron", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert version.stdout.startswith("cortex-neuron ")
