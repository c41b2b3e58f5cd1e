"""Real `cortex-gateway` processes for the fault and bad-input tests, and reading their streams."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from cortex.testing import NeuronProcess, free_port, start_neuron_process, toml_dumps
from cortex.translate.sse import SSEDecoder

KEY = "sk-faults-key"
ADMIN_KEY = "sk-faults-admin"
API = {"x-api-key": KEY}
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
ANTHROPIC = {**API, "anthropic-version": "2023-06-01"}


class GatewayProcess:
    """A running `cortex-gateway`: its API `url`, `metrics_url`, log; terminate or kill it."""

    def __init__(self, process: subprocess.Popen[bytes], url: str, metrics_url: str, log: Path):
        self.process = process
        self.url = url
        self.metrics_url = metrics_url
        self.log = log

    def logs(self) -> str:
        """What the process printed so far."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def terminate(self) -> None:
        """SIGTERM (the graceful drain)."""
        self.process.send_signal(signal.SIGTERM)

    def stop(self) -> int:
        """SIGTERM, wait, SIGKILL if it hangs; the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait()


def start_gateway(
    config: Mapping[str, Any],
    models: Sequence[Mapping[str, Any]] = (),
    *,
    nodes_up: int | None = None,
    timeout_s: float = 60.0,
    args: Sequence[str] = (),
    python: str = sys.executable,
) -> GatewayProcess:
    """Run `cortex-gateway` with `config` as cortex.toml (and `models` as models.toml) on free
    ports, under `python` (another virtual environment's, for install tests); return once
    `/health` answers with `nodes_up` nodes up (default: all)."""
    folder = Path(tempfile.mkdtemp(prefix="faults-gateway-"))
    data = dict(config)
    if models:
        (folder / "models.toml").write_text(toml_dumps({"models": list(models)}))
        data["models_config"] = str(folder / "models.toml")
    (folder / "cortex.toml").write_text(toml_dumps(data))
    port, metrics_port = free_port(), free_port()
    command = [
        python,
        "-c",
        "import sys; from cortex.cli import gateway_main; sys.exit(gateway_main())",
        "--config",
        str(folder / "cortex.toml"),
        "--listen",
        f"127.0.0.1:{port}",
        "--metrics-listen",
        f"127.0.0.1:{metrics_port}",
        *args,
    ]
    log = folder / "gateway.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, cwd=folder, env=env
        )
    gateway = GatewayProcess(
        process, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}", log
    )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"cortex-gateway exited:\n{gateway.logs()[-4000:]}")
        try:
            health = httpx.get(f"{gateway.url}/health", timeout=2).json()
            if health["nodes_up"] >= (health["nodes"] if nodes_up is None else nodes_up):
                return gateway
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    gateway.stop()
    raise RuntimeError(f"cortex-gateway did not start:\n{gateway.logs()[-4000:]}")


def gateway_config(
    neurons: Mapping[str, str | NeuronProcess], *, auth: bool = True, **gateway: Any
) -> dict[str, Any]:
    """A cortex.toml over `neurons` (name -> process or URL) with short test timings."""
    settings: dict[str, Any] = {
        "poll_interval_s": 1.0,  # polls time out at the interval: not too tight on a busy CI box
        "connect_timeout_s": 1.0,
        "request_timeout_s": 5.0,
        "load_timeout_s": 10.0,
        "drain_timeout_s": 10.0,
    }
    settings.update(gateway)
    config: dict[str, Any] = {
        "gateway": settings,
        "neurons": [
            {"name": name, "endpoint": node if isinstance(node, str) else node.url}
            for name, node in neurons.items()
        ],
    }
    if auth:
        config["auth"] = {"keys": [KEY], "admin_keys": [ADMIN_KEY]}
    return config


def fake_neuron(name: str, models: Sequence[str], **fake: Any) -> dict[str, Any]:
    """A fake neuron.toml: `models` of 400 MB and a 4096-token context, 2000 MB of memory."""
    fake.setdefault("tokens_per_s", 2000.0)
    fake.setdefault(
        "models", [{"id": m, "memory_mb": 400.0, "context_length": 4096} for m in models]
    )
    return {"name": name, "memory_mb": fake.pop("memory_mb", 2000.0), "fake": fake}


def start_neurons(configs: Mapping[str, Mapping[str, Any]]) -> dict[str, NeuronProcess]:
    """Start several fake neurons at once."""
    with ThreadPoolExecutor(len(configs)) as pool:
        futures = {n: pool.submit(start_neuron_process, dict(c)) for n, c in configs.items()}
        return {n: f.result() for n, f in futures.items()}


@dataclass
class Event:
    """One server-sent event as a client reads it."""

    event: str | None
    data: str

    def json(self) -> Any:
        return json.loads(self.data)


def sse_events(response: httpx.Response) -> Iterator[Event]:
    """The events of a streamed response as they arrive."""
    decoder = SSEDecoder()
    for piece in response.iter_raw():
        for event in decoder.feed(piece):
            yield Event(event.event, event.data)
    for event in decoder.finish():
        yield Event(event.event, event.data)


def chat(model: str, text: str = "hello", **extra: Any) -> dict[str, Any]:
    """An OpenAI chat request."""
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


def message(model: str, text: str = "hello", **extra: Any) -> dict[str, Any]:
    """An Anthropic messages request."""
    extra.setdefault("max_tokens", 512)
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


def is_openai_error(body: Any) -> bool:
    """Whether `body` is OpenAI's error envelope, well-formed."""
    error = body.get("error") if isinstance(body, dict) else None
    return (
        isinstance(error, dict)
        and isinstance(error.get("message"), str)
        and bool(error["message"])
        and isinstance(error.get("type"), str)
        and "param" in error
        and "code" in error
    )


def is_anthropic_error(body: Any) -> bool:
    """Whether `body` is Anthropic's error envelope, well-formed."""
    error = body.get("error") if isinstance(body, dict) else None
    return (
        isinstance(body, dict)
        and body.get("type") == "error"
        and isinstance(error, dict)
        and isinstance(error.get("type"), str)
        and isinstance(error.get("message"), str)
        and bool(error["message"])
    )


def wait_for(condition: Callable[[], bool], timeout_s: float = 20.0) -> None:
    """Wait for `condition` (checked every 20 ms), failing after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def node_up(gateway: GatewayProcess, node: str) -> bool:
    """Whether the gateway sees `node` up (its admin status)."""
    status = httpx.get(f"{gateway.url}/admin/status", headers=ADMIN, timeout=5).json()
    return any(n["name"] == node and n["up"] for n in status["nodes"])
