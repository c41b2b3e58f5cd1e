"""`cortex pull`, `cortex serve ORG/NAME --models-dir DIR` and `cortex load`, as a user runs them:
real processes, the stand-in hub of `cortex.testing.hub` behind HF_ENDPOINT, the real engine on
tiny random checkpoints."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from rich.console import Console

from cortex.cli_models import pull_on_node
from cortex.testing import free_port, start_gateway_process, start_neuron_process
from cortex.testing.checkpoints import tiny_gguf_bytes, tiny_llama_files
from cortex.testing.hub import StandInHub

from .faults.servers import ADMIN, ADMIN_KEY, fake_neuron, gateway_config


def _write(folder: Path, files: dict[str, bytes]) -> Path:
    folder.mkdir(parents=True)
    for name, content in files.items():
        (folder / name).write_bytes(content)
    return folder


@pytest.fixture(scope="module")
def hub() -> Iterator[StandInHub]:
    with StandInHub() as hub:
        hub.add("org/tiny", tiny_llama_files(shards=2))
        hub.add("org/tiny-GGUF", {f"tiny-{q}.gguf": tiny_gguf_bytes() for q in ("Q4_K_M", "Q8_0")})
        yield hub


def _env(hub: StandInHub, home: Path) -> dict[str, str]:
    # huggingface_hub reads these at import: the commands run in processes of their own.
    return {
        **os.environ,
        "HF_ENDPOINT": hub.url,
        "HF_HOME": str(home),
        "HF_HUB_OFFLINE": "0",
        "COLUMNS": "200",
    }


def _cortex(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cortex.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.e2e
@pytest.mark.slow  # two `cortex` processes, each importing torch for the architecture list
def test_pull_draws_bars_and_names_the_nearest_quant(hub: StandInHub, tmp_path: Path) -> None:
    env = _env(hub, tmp_path)
    done = _cortex("pull", "org/tiny", env=env)
    assert done.returncode == 0, done.stderr
    assert "pulling org/tiny: safetensors (LlamaForCausalLM), 7 files" in done.stderr
    assert "model-00002-of-00002.safetensors" in done.stderr and "total" in done.stderr
    assert "pulled org/tiny into " in done.stderr and "cortex serve org/tiny" in done.stderr
    assert list((tmp_path / "hub" / "models--org--tiny" / "snapshots").iterdir())
    missing = _cortex("pull", "org/tiny-GGUF:Q6_K", env=env)
    assert missing.returncode == 1
    assert "has no Q6_K GGUF; it has Q4_K_M, Q8_0; the nearest is Q4_K_M" in missing.stderr


@pytest.mark.e2e
@pytest.mark.slow
def test_serve_a_hub_id_and_a_models_dir_then_load(hub: StandInHub, tmp_path: Path) -> None:
    models = tmp_path / "models"
    _write(models / "tiny-a", tiny_llama_files(seed=3))
    _write(models / "other", tiny_llama_files(seed=4, model_type="gpt_neox"))  # not supported
    broken = tiny_llama_files(seed=5)
    broken["config.json"] = broken["config.json"].replace(
        b'"hidden_size": 32', b'"hidden_size": 48'
    )
    _write(models / "broken", broken)
    port = free_port()
    env = _env(hub, tmp_path / "home")
    args = ["serve", "org/tiny", "--models-dir", str(models), "--device", "cpu"]
    args += ["--listen", f"127.0.0.1:{port}", "--metrics-listen", f"127.0.0.1:{free_port()}"]
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "cortex.cli", *args], env=env, stdout=out, stderr=out
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        listed: dict[str, list[str]] = {}
        while "local" not in listed.get("org/tiny", []):
            assert process.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            try:
                data = httpx.get(f"{url}/v1/models", timeout=2).json()["data"]
                listed = {m["id"]: m["loaded_on"] for m in data}
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        assert "pulling org/tiny" in log.read_text()  # the bars drew before the server started
        assert {"org/tiny", "tiny-a", "broken"} <= set(listed) and "other" not in listed
        ask = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
        reply = httpx.post(
            f"{url}/v1/chat/completions", json={**ask, "model": "org/tiny"}, timeout=60
        )
        assert reply.status_code == 200 and reply.json()["choices"][0]["message"]["content"]

        cli_env = {**env, "CORTEX_URL": url}
        loaded = _cortex("load", "tiny-a", env=cli_env)
        assert loaded.returncode == 0, loaded.stdout + loaded.stderr
        assert "loaded tiny-a on local" in loaded.stdout
        reply = httpx.post(
            f"{url}/v1/chat/completions", json={**ask, "model": "tiny-a"}, timeout=60
        )
        assert reply.status_code == 200
        failed = _cortex("load", "broken", env=cli_env)
        assert failed.returncode == 1
        # the neuron's own error, through the gateway
        assert "expected (259, 48)" in failed.stderr, failed.stderr
        status = json.loads(_cortex("status", "--json", env=cli_env).stdout)
        entry = next(m for m in status["models"] if m["id"] == "broken")
        assert entry["nodes"][0]["state"] == "failed" and entry["nodes"][0]["error"]
    finally:
        process.terminate()
        process.wait(30)


@pytest.mark.e2e
def test_pull_on_a_node_draws_the_bytes_it_reports(tmp_path: Path) -> None:
    with StandInHub(chunk_delay_s=0.3) as hub:  # ~110 KB in 64 KB chunks: a pull of seconds
        hub.add("org/tiny", tiny_llama_files(shards=2))
        env = {"HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path), "HF_HUB_OFFLINE": "0"}
        neuron = start_neuron_process(fake_neuron("a", ["m1"]), env=env)
        try:
            gateway = start_gateway_process(gateway_config({"a": neuron}, poll_interval_s=0.5))
            screen = io.StringIO()
            console = Console(file=screen, width=160, color_system=None)
            try:
                with ThreadPoolExecutor(1) as pool:
                    pulled = pool.submit(
                        pull_on_node, "org/tiny", "a", gateway.url, ADMIN_KEY, console=console
                    )
                    seen: list[dict[str, Any]] = []
                    while not pulled.done():  # what the bar reads: the node's pull, polled
                        status = httpx.get(f"{gateway.url}/admin/status", headers=ADMIN).json()
                        seen += status["nodes"][0]["pulls"]
                        time.sleep(0.05)
                said = screen.getvalue()
                missing = pull_on_node("org/missing", "a", gateway.url, ADMIN_KEY, console=console)
            finally:
                gateway.stop()
        finally:
            neuron.stop()
    assert pulled.result() == 0, said
    assert "pulled org/tiny on a" in said and "a: org/tiny" in said and "kB" in said
    midway = [p for p in seen if 0 < p.get("bytes", 0) < p.get("total_bytes", 0)]
    assert midway and midway[0]["source"] == "hf:org/tiny"
    assert midway[0]["phase"] == "pulling" and 0 < midway[0]["fraction"] < 1
    assert missing == 1
    assert "error 404" in screen.getvalue() and "no model org/missing" in screen.getvalue()
