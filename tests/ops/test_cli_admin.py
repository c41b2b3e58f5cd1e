"""`cortex status | models | placement | load | pin | unpin | cordon | drain | uncordon` against a
real gateway: JSON for scripts, ids never cut, the environment instead of flags, exit codes."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from cortex.gateway import admin_cli
from cortex.gateway.admin_cli import Connection
from cortex.testing import start_gateway_process

from ..faults.servers import ADMIN_KEY, gateway_config
from .conftest import LONG_ID, Ops

pytestmark = pytest.mark.e2e


def cortex(*argv: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`cortex ARGV` as a script runs it: stdout a pipe, settings from the environment."""
    return subprocess.run(
        [sys.executable, "-m", "cortex.cli", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "XDG_CONFIG_HOME": "/nonexistent", **env},
    )


class Screen:
    """A narrow terminal the in-process commands print to."""

    def __init__(self, width: int = 40) -> None:
        self.buffer = io.StringIO()
        self.console = Console(file=self.buffer, width=width, color_system=None)

    def said(self) -> str:
        text = self.buffer.getvalue()
        self.buffer.seek(0)
        self.buffer.truncate()
        return text


def test_flags_then_environment_then_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "cortex").mkdir()
    (tmp_path / "cortex" / "cli.toml").write_text('url = "http://file:1"\nadmin_key = "k-file"\n')
    home = {"XDG_CONFIG_HOME": str(tmp_path)}
    assert Connection.resolve(env=home) == Connection("http://file:1", "k-file")
    env = {**home, "CORTEX_URL": "http://env:2", "CORTEX_ADMIN_KEY": "k-env"}
    assert Connection.resolve(env=env) == Connection("http://env:2", "k-env")
    assert Connection.resolve("http://flag:3", "k-flag", env=env) == Connection(
        "http://flag:3", "k-flag"
    )
    assert Connection.resolve(env={"XDG_CONFIG_HOME": str(tmp_path / "none")}) == Connection()


def test_a_script_reads_whole_ids_and_json(ops: Ops) -> None:
    loaded = cortex("load", LONG_ID, "--node", "b", env=ops.env)
    assert loaded.returncode == 0, loaded.stderr
    piped = cortex("status", env=ops.env)
    assert piped.returncode == 0, piped.stderr
    assert any(LONG_ID in line for line in piped.stdout.splitlines())  # `| grep` finds it
    assert "…" not in piped.stdout
    listed = cortex("models", "--json", env=ops.env)
    assert LONG_ID in {m["id"] for m in json.loads(listed.stdout)}
    where = cortex("placement", "m2", "--json", env=ops.env)
    assert json.loads(where.stdout)["action"] in ("load", "route")


def test_a_narrow_terminal_wraps_ids_instead_of_cutting_them(ops: Ops) -> None:
    screen = Screen(width=40)
    conn = {"url": ops.gateway.url, "admin_key": ADMIN_KEY}
    assert admin_cli.load(LONG_ID, node="b", console=screen.console, **conn) == 0
    screen.said()
    assert admin_cli.status(console=screen.console, **conn) == 0
    text = screen.said()
    assert "…" not in text
    cells = "".join(line.split("│")[1].strip() for line in text.splitlines() if "│" in line)
    assert LONG_ID in cells  # the id's column, read top to bottom


def test_operations_from_the_command_line(ops: Ops) -> None:
    screen = Screen(width=200)
    conn = {"url": ops.gateway.url, "admin_key": ADMIN_KEY}
    assert admin_cli.load("m1", node="a", console=screen.console, **conn) == 0
    assert admin_cli.pin("m1", console=screen.console, **conn) == 0
    assert "pinned m1" in screen.said()
    assert admin_cli.cordon("a", console=screen.console, **conn) == 0
    assert screen.said().strip() == "cordoned a"
    assert admin_cli.status(as_json=True, console=screen.console, **conn) == 0
    nodes = {n["name"]: n for n in json.loads(screen.said())["nodes"]}
    assert nodes["a"]["cordoned"] and not nodes["b"]["cordoned"]
    assert admin_cli.drain("a", as_json=True, console=screen.console, **conn) == 0
    report = json.loads(screen.said())
    assert report["state"] == "drained" and {"model": "m1", "to": "b"} in report["moved"]
    assert admin_cli.status(console=screen.console, **conn) == 0
    assert "cordoned" in screen.said()
    assert admin_cli.uncordon("a", console=screen.console, **conn) == 0
    assert admin_cli.unpin("m1", console=screen.console, **conn) == 0
    assert admin_cli.cordon("nope", console=screen.console, **conn) == 1
    assert "error 404" in screen.said()


def test_exit_codes_say_what_happened(ops: Ops) -> None:
    screen = Screen()
    assert admin_cli.status(ops.gateway.url, "wrong", console=screen.console) == 3
    assert "error 401" in screen.said()
    assert admin_cli.status("http://127.0.0.1:9", console=screen.console) == 2
    assert "cannot reach the gateway" in screen.said()
    rounds = admin_cli.status(
        ops.gateway.url, ADMIN_KEY, as_json=True, watch_s=0.01, rounds=2, console=screen.console
    )
    assert rounds == 0
    lines = screen.said().splitlines()
    assert len(lines) == 2 and all(json.loads(line)["nodes"] for line in lines)
    half = start_gateway_process(
        gateway_config({"a": ops.neurons["a"], "ghost": "http://127.0.0.1:9"}), nodes_up=1
    )
    try:
        down = cortex("status", env={**ops.env, "CORTEX_URL": half.url})
        assert down.returncode == 1, down.stdout + down.stderr
        assert "down" in down.stdout
    finally:
        half.stop()
