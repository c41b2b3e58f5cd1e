"""Real `cortex-neuron` and `cortex-gateway` processes for tests, on free ports of 127.0.0.1.

`start_neuron_process(config)` runs `cortex-neuron` (by default with `--harness fake`) and returns
once `/health` answers; `start_gateway_process(config)` runs `cortex-gateway` and returns once its
`/health` sees the nodes up. `.stop()` sends SIGTERM (the graceful drain), `.kill()` SIGKILL.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Self

import httpx

from cortex.config.writing import toml_dumps

__all__ = [
    "GatewayProcess",
    "NeuronProcess",
    "ServerProcess",
    "free_port",
    "start_gateway_process",
    "start_neuron_process",
    "toml_dumps",
]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on `host` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """A server process started for a test: its `url`, `pid`, log file; stop or kill it."""

    def __init__(self, process: subprocess.Popen[bytes], url: str, log_path: Path) -> None:
        self.process = process
        self.url = url
        self.log_path = log_path

    @property
    def pid(self) -> int:
        """The process id."""
        return self.process.pid

    def logs(self) -> str:
        """What the process printed so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def terminate(self) -> None:
        """SIGTERM (the graceful drain), without waiting."""
        self.process.send_signal(signal.SIGTERM)

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM (graceful drain), wait up to `timeout_s`, then SIGKILL; the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait()

    def cpu_s(self) -> float:
        """CPU seconds (user + system) the process has used so far (Linux `/proc`)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def kill(self) -> int:
        """SIGKILL at once; the exit code."""
        if self.process.poll() is None:
            self.process.kill()
        return self.process.wait()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class NeuronProcess(ServerProcess):
    """A running `cortex-neuron` process: its `url`, `pid`, log file; stop or kill it."""


def start_neuron_process(
    config: str | Path | Mapping[str, Any] | None = None,
    *,
    harness: str = "fake",
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    workdir: str | Path | None = None,
    startup_timeout_s: float = 60.0,
    port: int | None = None,
) -> NeuronProcess:
    """Start `cortex-neuron` on a free port of 127.0.0.1 and wait for its `/health`.

    Args:
        config: a neuron.toml path, or its content as a dict (written to a file), or None.
        harness: `fake` (default) or `engine`.
        args: more command-line flags (`--token`, `--memory-mb`...).
        env: extra environment variables.
        workdir: where the config and log files go (default: a new temporary folder).
        startup_timeout_s: how long to wait for `/health`.
        port: the port to listen on (default: a free one); e.g. to restart a neuron in place.

    Raises:
        RuntimeError: the process exited or did not answer in time (its log is in the message).
    """
    folder = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="neuron-"))
    folder.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "cortex.neuron", "--harness", harness, *args]
    if isinstance(config, Mapping):
        path = folder / "neuron.toml"
        path.write_text(toml_dumps(config))
        command += ["--config", str(path)]
    elif config is not None:
        command += ["--config", str(config)]
    environment = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    fixed = port
    for attempt in range(3):
        port = fixed or free_port()
        log_path = folder / f"neuron-{port}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [*command, "--listen", f"127.0.0.1:{port}"],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=environment,
                cwd=folder,
            )
        handle = NeuronProcess(process, f"http://127.0.0.1:{port}", log_path)
        if _wait_healthy(handle, startup_timeout_s):
            return handle
        handle.kill()
        lost_port_race = "address already in use" in handle.logs().lower()
        if not lost_port_race or attempt == 2 or fixed:
            raise RuntimeError(f"cortex-neuron did not start:\n{handle.logs()[-4000:]}")
    raise AssertionError("unreachable")


def _wait_healthy(handle: NeuronProcess, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if handle.process.poll() is not None:
                return False
            try:
                if client.get(f"{handle.url}/health").status_code == 200:
                    return True
            except httpx.TransportError:
                pass
            time.sleep(0.05)
    return False


class GatewayProcess(ServerProcess):
    """A running `cortex-gateway` process: its API `url`, `metrics_url`, log file."""

    def __init__(
        self, process: subprocess.Popen[bytes], url: str, metrics_url: str, log_path: Path
    ) -> None:
        super().__init__(process, url, log_path)
        self.metrics_url = metrics_url


def start_gateway_process(
    config: Mapping[str, Any] | None = None,
    models: Sequence[Mapping[str, Any]] = (),
    *,
    nodes_up: int | None = None,
    args: Sequence[str] = (),
    python: str = sys.executable,
    env: Mapping[str, str] | None = None,
    startup_timeout_s: float = 120.0,
) -> GatewayProcess:
    """Start `cortex-gateway` on free ports of 127.0.0.1 and wait until its `/health` sees
    `nodes_up` nodes up (default: all).

    Args:
        config: cortex.toml as a dict (written to a file); None runs the embedded gateway
            (a neuron in its own process, as `cortex serve` does).
        models: models.toml's `[[models]]` profiles, written beside it.
        nodes_up: how many nodes must be up before it counts as started.
        args: more command-line flags (`--log-level debug`...).
        python: the interpreter to run it under (another virtual environment's).
        env: extra environment variables (`PYTHONPATH` to run another checkout's `src/`).
        startup_timeout_s: how long to wait.

    Raises:
        RuntimeError: the process exited or was not ready in time (its log is in the message).
    """
    folder = Path(tempfile.mkdtemp(prefix="gateway-"))
    port, metrics_port = free_port(), free_port()
    command = [
        python,
        "-c",
        "import sys; from cortex.cli import gateway_main; sys.exit(gateway_main())",
        "--listen",
        f"127.0.0.1:{port}",
        "--metrics-listen",
        f"127.0.0.1:{metrics_port}",
        *args,
    ]
    if config is not None:
        data = dict(config)
        if models:
            (folder / "models.toml").write_text(toml_dumps({"models": list(models)}))
            data["models_config"] = str(folder / "models.toml")
        (folder / "cortex.toml").write_text(toml_dumps(data))
        command += ["--config", str(folder / "cortex.toml")]
    log_path = folder / "gateway.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=folder,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
    gateway = GatewayProcess(
        process, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}", log_path
    )
    deadline = time.monotonic() + startup_timeout_s
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"cortex-gateway exited:\n{gateway.logs()[-4000:]}")
            try:
                health = client.get(f"{gateway.url}/health").json()
                if health["nodes_up"] >= (health["nodes"] if nodes_up is None else nodes_up):
                    return gateway
            except httpx.TransportError:
                pass
            time.sleep(0.05)
    gateway.stop()
    raise RuntimeError(f"cortex-gateway did not start:\n{gateway.logs()[-4000:]}")
