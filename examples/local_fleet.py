"""Two neurons and a gateway on one machine: a whole cortex fleet on localhost.

Starts two `cortex-neuron` processes ("left" and "right") on free ports, writes a cortex.toml
naming them, runs `cortex serve --config` on it, loads the default model on both nodes, sends
a few chats through the gateway and prints `cortex status`. Ctrl-C or the end stops everything.

    python examples/local_fleet.py [--harness engine|fake]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from cortex.gateway import admin_cli
from cortex.testing import free_port, start_neuron_process

parser = argparse.ArgumentParser()
parser.add_argument("--harness", choices=["engine", "fake"], default="engine")
args = parser.parse_args()

neurons = {
    name: start_neuron_process({"name": name}, harness=args.harness) for name in ("left", "right")
}
url = f"http://127.0.0.1:{free_port()}"
config = Path(tempfile.mkdtemp()) / "cortex.toml"
config.write_text(
    f'[gateway]\nlisten = "{url[7:]}"\nmetrics_listen = "127.0.0.1:{free_port()}"\n'
    + "".join(f'\n[[neurons]]\nname = "{n}"\nendpoint = "{p.url}"\n' for n, p in neurons.items())
)
gateway = subprocess.Popen([sys.executable, "-m", "cortex", "serve", "--config", str(config)])
try:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health").json()["nodes_up"] == 2:
                break
        except httpx.TransportError:
            time.sleep(0.2)
    model = "smollm2-135m-instruct"
    for node in neurons:  # one copy per node: the gateway routes to the least busy
        admin_cli.load(model, node=node, url=url)
    for question in ("What is a neuron?", "What is a cortex?"):
        body = {
            "model": model,
            "max_tokens": 24,
            "messages": [{"role": "user", "content": question}],
        }
        reply = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=300).json()
        print(f"{question} -> {reply['choices'][0]['message']['content']!r}")
    admin_cli.status(url=url)
finally:
    gateway.terminate()
    gateway.wait(30)
    for neuron in neurons.values():
        neuron.stop()
