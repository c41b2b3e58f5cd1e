"""`cortex status | models | load | unload`: the gateway's admin API from the command line.

Each function talks HTTP to a running gateway (`url`, default http://127.0.0.1:31313), sending
`admin_key` as a Bearer token when given, prints rich tables or a line, and returns the exit
code: 0 on success, 1 when the gateway answered with an error, 2 when it could not be reached.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

__all__ = ["DEFAULT_URL", "load", "models", "status", "unload"]

DEFAULT_URL = "http://127.0.0.1:31313"


def status(
    url: str = DEFAULT_URL, admin_key: str | None = None, *, console: Console | None = None
) -> int:
    """`cortex status [--url URL] [--admin-key KEY]`: tables of nodes and models.

    Nodes: name, up/down, kind, devices, memory used/capacity, requests in flight, load cycles.
    Models: id, state per node, in flight, last used, pinned.
    """
    console = console or Console()
    try:
        data = _call("GET", url, "/admin/status", admin_key, console)
    except _Exit as failed:
        return failed.code
    nodes = Table(title="Nodes")
    for column in ("node", "state", "kind", "devices", "memory MB", "in flight", "cycles"):
        nodes.add_column(column)
    for node in data["nodes"]:
        devices = ", ".join(
            f"{d['kind']}:{d['index']} {d['name']}".strip() for d in node["devices"]
        )
        nodes.add_row(
            node["name"],
            "[green]up[/green]" if node["up"] else f"[red]down[/red] {node.get('error') or ''}",
            node["kind"],
            devices or "-",
            _memory(node),
            str(node["in_flight"]),
            str(node["load_cycles"]),
        )
    console.print(nodes)
    models = Table(title="Models")
    for column in ("model", "state", "node", "in flight", "last used", "pinned", "MB"):
        models.add_column(column)
    for model in data["models"]:
        placements = model["nodes"] or [{}]
        for i, where in enumerate(placements):
            models.add_row(
                model["id"] if i == 0 else "",
                _state(where.get("state", "-")),
                where.get("node", "-"),
                str(where.get("in_flight", 0)),
                _ago(where.get("last_used_at")),
                "yes" if model["pinned"] or where.get("pinned") else "",
                _mb(where.get("memory_mb")),
            )
    console.print(models)
    return 0


def models(
    url: str = DEFAULT_URL, admin_key: str | None = None, *, console: Console | None = None
) -> int:
    """`cortex models [--url URL] [--admin-key KEY]`: the catalogue, with where each model is."""
    console = console or Console()
    try:
        data = _call("GET", url, "/admin/status", admin_key, console)
    except _Exit as failed:
        return failed.code
    table = Table(title="Models")
    for column in ("model", "aliases", "context", "loaded on", "loadable on", "pinned"):
        table.add_column(column)
    for model in data["models"]:
        table.add_row(
            model["id"],
            ", ".join(model["aliases"]),
            str(model["context_length"] or "-"),
            ", ".join(model["loaded_on"]) or "-",
            ", ".join(model["loadable_on"]) or "-",
            "yes" if model["pinned"] else "",
        )
    console.print(table)
    return 0


def load(
    model: str,
    node: str | None = None,
    url: str = DEFAULT_URL,
    admin_key: str | None = None,
    *,
    console: Console | None = None,
) -> int:
    """`cortex load MODEL [--node NAME] [--url URL] [--admin-key KEY]`: load a model (where
    placement puts it, or on NAME), evicting as placement says; prints where it went."""
    console = console or Console()
    body: dict[str, Any] = {"model": model, **({"node": node} if node else {})}
    try:
        data = _call("POST", url, "/admin/models/load", admin_key, console, body)
    except _Exit as failed:
        return failed.code
    evicted = ", ".join(f"{e['model']} ({e['node']})" for e in data["evictions"])
    console.print(
        f"loaded {data['model']} on {data['node']}" + (f", evicting {evicted}" if evicted else "")
    )
    return 0


def unload(
    model: str,
    node: str | None = None,
    url: str = DEFAULT_URL,
    admin_key: str | None = None,
    *,
    console: Console | None = None,
) -> int:
    """`cortex unload MODEL [--node NAME] [--url URL] [--admin-key KEY]`: unload a model from
    NAME, or from every node where it is loaded."""
    console = console or Console()
    body: dict[str, Any] = {"model": model, **({"node": node} if node else {})}
    try:
        data = _call("POST", url, "/admin/models/unload", admin_key, console, body)
    except _Exit as failed:
        return failed.code
    nodes = ", ".join(data["unloaded_from"]) or "nowhere (it was not loaded)"
    console.print(f"unloaded {data['model']} from {nodes}")
    return 0


def _call(
    method: str,
    url: str,
    path: str,
    admin_key: str | None,
    console: Console,
    body: dict[str, Any] | None = None,
) -> Any:
    headers = {"authorization": f"Bearer {admin_key}"} if admin_key else {}
    try:
        response = httpx.request(
            method, url.rstrip("/") + path, json=body, headers=headers, timeout=600.0
        )
    except httpx.TransportError as exc:
        console.print(f"[red]error:[/red] cannot reach the gateway at {url}: {exc}")
        raise _Exit(2) from exc
    if response.status_code >= 400:
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text
        console.print(f"[red]error {response.status_code}:[/red] {message}")
        raise _Exit(1)
    return response.json()


class _Exit(Exception):
    """The command failed; `code` is its exit code (1: the gateway said no, 2: unreachable)."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def _memory(node: dict[str, Any]) -> str:
    capacity, free = node.get("memory_capacity_mb"), node.get("memory_free_mb")
    if capacity is None:
        return "-"
    used = capacity - free if free is not None else None
    return f"{_mb(used)} / {_mb(capacity)}"


def _mb(value: Any) -> str:
    return f"{value:,.0f}" if isinstance(value, int | float) else "-"


def _state(state: str) -> str:
    color = {"loaded": "green", "loading": "yellow", "unloading": "yellow", "failed": "red"}
    return f"[{color[state]}]{state}[/{color[state]}]" if state in color else state


def _ago(stamp: Any) -> str:
    if not isinstance(stamp, int | float) or stamp <= 0:
        return "never"
    seconds = max(0.0, time.time() - stamp)
    if seconds < 60:
        return f"{seconds:.0f}s ago"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.1f}h ago"
