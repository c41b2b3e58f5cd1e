"""`cortex status | models | placement | load | unload | pin | unpin | cordon | uncordon | drain`.

Each command talks HTTP to a running gateway's admin API. Where the gateway is and the admin key
come from, first to last: the `--url` / `--admin-key` flags, the `CORTEX_URL` /
`CORTEX_ADMIN_KEY` environment variables, the file `~/.config/cortex/cli.toml`
(`$XDG_CONFIG_HOME/cortex/cli.toml`; keys `url` and `admin_key`), then http://127.0.0.1:31313
with no key. A key in a flag shows in `ps` and the shell's history: prefer the other two.

Read commands print tables for people, or with `--json` the API's JSON for scripts; ids are
never cut (a table grows, or wraps in a narrow terminal). Exit codes: `status` returns 0 when
every node is up, 1 when some node is down, 2 when the gateway cannot be reached, 3 when it
refused (a wrong key); every other command 0 on success, 1 when the gateway refused, 2 when it
cannot be reached.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

__all__ = [
    "DEFAULT_URL",
    "Connection",
    "add_commands",
    "cordon",
    "drain",
    "load",
    "models",
    "pin",
    "placement",
    "run",
    "status",
    "uncordon",
    "unload",
    "unpin",
]

DEFAULT_URL = "http://127.0.0.1:31313"
OK, REFUSED, UNREACHABLE = 0, 1, 2
NODE_DOWN, STATUS_REFUSED = 1, 3


@dataclass(frozen=True, slots=True)
class Connection:
    """Where the gateway is and the admin key to send (None: none).

    `Connection.resolve(url, admin_key)` fills what the flags left out from the environment and
    the config file.
    """

    url: str = DEFAULT_URL
    admin_key: str | None = None

    @classmethod
    def resolve(
        cls,
        url: str | None = None,
        admin_key: str | None = None,
        *,
        env: Mapping[str, str] | None = None,
        config_file: Path | None = None,
    ) -> Connection:
        """Flags, then `CORTEX_URL` / `CORTEX_ADMIN_KEY`, then the config file, then defaults.

        Raises:
            ValueError: the config file is not valid TOML.
        """
        env = os.environ if env is None else env
        path = config_file or cli_config_path(env)
        saved: dict[str, Any] = {}
        if path.is_file():
            try:
                saved = tomllib.loads(path.read_text(encoding="utf-8"))
            except tomllib.TOMLDecodeError as exc:
                raise ValueError(f"{path}: not valid TOML: {exc}") from None
        return cls(
            url=url or env.get("CORTEX_URL") or str(saved.get("url") or DEFAULT_URL),
            admin_key=admin_key
            or env.get("CORTEX_ADMIN_KEY")
            or (str(saved["admin_key"]) if saved.get("admin_key") else None),
        )


def cli_config_path(env: Mapping[str, str]) -> Path:
    """`$XDG_CONFIG_HOME/cortex/cli.toml`, else `~/.config/cortex/cli.toml`."""
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "cortex" / "cli.toml"


# -- the commands ------------------------------------------------------------------------------


def status(
    url: str = DEFAULT_URL,
    admin_key: str | None = None,
    *,
    as_json: bool = False,
    watch_s: float | None = None,
    rounds: int | None = None,
    console: Console | None = None,
) -> int:
    """`cortex status [--json] [--watch SECONDS]`: tables of nodes and models.

    Nodes: name, state (up, down, cordoned, draining), kind, devices, memory used/capacity,
    requests in flight, load cycles. Models: id, state per node, in flight, last used, pinned.
    With `watch_s`, again every `watch_s` seconds (a JSON line each with `as_json`) until
    Ctrl-C, or `rounds` times. Returns 0 when every node is up, 1 when one is down, 2 when the
    gateway is unreachable, 3 when it refused.
    """
    console = console or _console()
    done = 0
    while True:
        code = _status_once(Connection(url, admin_key), console, as_json, clear=watch_s is not None)
        done += 1
        if watch_s is None or (rounds is not None and done >= rounds):
            return code
        time.sleep(watch_s)


def _status_once(conn: Connection, console: Console, as_json: bool, *, clear: bool) -> int:
    try:
        data = _call("GET", conn, "/admin/status", console)
    except _Exit as failed:
        return STATUS_REFUSED if failed.code == REFUSED else failed.code
    code = OK if all(node["up"] for node in data["nodes"]) else NODE_DOWN
    if as_json and clear:
        _line(console, data)  # one JSON line per round: a stream a script can read
        return code
    if as_json:
        console.print_json(json.dumps(data))
        return code
    if clear and console.is_terminal:
        console.clear()
    nodes = Table(title="Nodes")
    for column in ("node", "state", "kind", "devices", "memory MB", "in flight", "cycles"):
        nodes.add_column(column, overflow="fold")
    for node in data["nodes"]:
        devices = ", ".join(
            f"{d['kind']}:{d['index']} {d['name']}".strip() for d in node["devices"]
        )
        nodes.add_row(
            node["name"],
            _node_state(node),
            node["kind"],
            devices or "-",
            _memory(node),
            str(node["in_flight"]),
            str(node["load_cycles"]),
        )
    console.print(nodes)
    models = Table(title="Models")
    for column in ("model", "state", "node", "in flight", "last used", "pinned", "MB", "runs as"):
        models.add_column(column, overflow="fold")
    for model in data["models"]:
        placements = model["nodes"] or [{}]
        for i, where in enumerate(placements):
            models.add_row(
                model["id"] if i == 0 else "",
                _state(where.get("state", "-"), where.get("progress")),
                where.get("node", "-"),
                str(where.get("in_flight", 0)),
                _ago(where.get("last_used_at")),
                "yes" if model["pinned"] or where.get("pinned") else "",
                _mb(where.get("memory_mb")),
                " ".join(filter(None, (where.get("dtype"), where.get("quant")))) or "-",
            )
    console.print(models)
    return code


def models(
    url: str = DEFAULT_URL,
    admin_key: str | None = None,
    *,
    as_json: bool = False,
    console: Console | None = None,
) -> int:
    """`cortex models [--json]`: the catalogue, with where each model is loaded or loadable."""
    console = console or _console()
    try:
        data = _call("GET", Connection(url, admin_key), "/admin/status", console)
    except _Exit as failed:
        return failed.code
    if as_json:
        console.print_json(json.dumps(data["models"]))
        return OK
    table = Table(title="Models")
    for column in ("model", "aliases", "context", "loaded on", "loadable on", "pinned"):
        table.add_column(column, overflow="fold")
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
    return OK


def placement(
    model: str,
    url: str = DEFAULT_URL,
    admin_key: str | None = None,
    *,
    exclude: str | None = None,
    as_json: bool = False,
    console: Console | None = None,
) -> int:
    """`cortex placement MODEL [--exclude a,b] [--json]`: where MODEL would go now and what
    would be evicted for it (a dry run: nothing is done)."""
    console = console or _console()
    query = {"model": model, **({"exclude": exclude} if exclude else {})}
    path = f"/admin/placement?{httpx.QueryParams(query)}"
    try:
        data = _call("GET", Connection(url, admin_key), path, console)
    except _Exit as failed:
        return failed.code
    if as_json:
        console.print_json(json.dumps(data))
        return OK
    console.print(f"{data['model']}: {data['action']} on {data['node']} ({data['reason']})")
    for eviction in data["evictions"]:
        console.print(
            f"  evicting {eviction['model']} from {eviction['node']} "
            f"({_mb(eviction['memory_mb'])} MB, {eviction['reason']})"
        )
    return OK


def load(
    model: str,
    node: str | None = None,
    url: str = DEFAULT_URL,
    admin_key: str | None = None,
    *,
    as_json: bool = False,
    console: Console | None = None,
) -> int:
    """`cortex load MODEL [--node NAME]`: load a model (where placement puts it, or on NAME),
    evicting as placement says; prints where it went."""
    body: dict[str, Any] = {"model": model, **({"node": node} if node else {})}

    def say(data: dict[str, Any]) -> str:
        evicted = ", ".join(f"{e['model']} ({e['node']})" for e in data["evictions"])
        return f"loaded {data['model']} on {data['node']}" + (
            f", evicting {evicted}" if evicted else ""
        )

    return _act("POST", "/admin/models/load", body, say, url, admin_key, as_json, console)


def unload(
    model: str,
    node: str | None = None,
    url: str = DEFAULT_URL,
    admin_key: str | None = None,
    *,
    as_json: bool = False,
    console: Console | None = None,
) -> int:
    """`cortex unload MODEL [--node NAME]`: unload a model from NAME, or from every node."""
    body: dict[str, Any] = {"model": model, **({"node": node} if node else {})}

    def say(data: dict[str, Any]) -> str:
        nodes = ", ".join(data["unloaded_from"]) or "nowhere (it was not loaded)"
        return f"unloaded {data['model']} from {nodes}"

    return _act("POST", "/admin/models/unload", body, say, url, admin_key, as_json, console)


def pin(
    model: str,
    node: str | None = None,
    url: str = DEFAULT_URL,
    admin_key: str | None = None,
    *,
    save: bool = False,
    as_json: bool = False,
    console: Console | None = None,
) -> int:
    """`cortex pin MODEL [--node NAME] [--save]`: keep MODEL loaded (on NAME only, when given)
    and never evict it; until the gateway restarts, or for good with `--save` (models.toml)."""
    body: dict[str, Any] = {"model": model, "save": save, **({"node": node} if node else {})}

    def say(data: dict[str, Any]) -> str:
        saved = f"; saved (backup: {data['backup']})" if data["saved"] else ""
        return f"pinned {data['model']}, loaded on {data['loaded_on']}{saved}"

    return _act("POST", "/admin/models/pin", body, say, url, admin_key, as_json, console)


def unpin(
    model: str,
    url: str = DEFAULT_URL,
    admin_key: str | None = None,
    *,
    save: bool = False,
    as_json: bool = False,
    console: Console | None = None,
) -> int:
    """`cortex unpin MODEL [--save]`: MODEL may be evicted again (it stays loaded for now)."""

    def say(data: dict[str, Any]) -> str:
        return f"unpinned {data['model']}" + ("; saved" if data["saved"] else "")

    body = {"model": model, "save": save}
    return _act("POST", "/admin/models/unpin", body, say, url, admin_key, as_json, console)


def cordon(
    node: str,
    url: str = DEFAULT_URL,
    admin_key: str | None = None,
    *,
    as_json: bool = False,
    console: Console | None = None,
) -> int:
    """`cortex cordon NODE`: no new loads on NODE; what is loaded there keeps serving."""
    path = f"/admin/nodes/{node}/cordon"
    return _act("POST", path, None, lambda d: f"cordoned {node}", url, admin_key, as_json, console)


def uncordon(
    node: str,
    url: str = DEFAULT_URL,
    admin_key: str | None = None,
    *,
    as_json: bool = False,
    console: Console | None = None,
) -> int:
    """`cortex uncordon NODE`: NODE takes new loads again."""
    path = f"/admin/nodes/{node}/uncordon"
    say = lambda d: f"uncordoned {node}"  # noqa: E731
    return _act("POST", path, None, say, url, admin_key, as_json, console)


def drain(
    node: str,
    url: str = DEFAULT_URL,
    admin_key: str | None = None,
    *,
    as_json: bool = False,
    console: Console | None = None,
) -> int:
    """`cortex drain NODE`: cordon NODE, load its pinned and recently used models on other
    nodes, move traffic to them, then unload everything there; returns when NODE is empty."""

    def say(data: dict[str, Any]) -> str:
        lines = [f"{node}: {data['state']}"]
        lines += [f"  moved {m['model']} to {m['to']}" for m in data["moved"]]
        lines += [f"  unloaded {m}" for m in data["unloaded"]]
        lines += [f"  [yellow]kept[/yellow] {s['model']}: {s['reason']}" for s in data["stayed"]]
        return "\n".join(lines)

    path = f"/admin/nodes/{node}/drain"
    return _act("POST", path, None, say, url, admin_key, as_json, console)


# -- the command line --------------------------------------------------------------------------


def add_commands(sub: Any) -> None:
    """Register the admin commands on `cortex`'s subparsers."""

    def command(name: str, help: str, *, json_flag: bool = True) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = sub.add_parser(name, help=help, description=help)
        parser.add_argument(
            "--url",
            default=None,
            help=f"base URL of the gateway (default: $CORTEX_URL, else `url` in "
            f"~/.config/cortex/cli.toml, else {DEFAULT_URL})",
        )
        parser.add_argument(
            "--admin-key",
            default=None,
            help="admin key (default: $CORTEX_ADMIN_KEY, else `admin_key` in "
            "~/.config/cortex/cli.toml; a flag shows in `ps`)",
        )
        if json_flag:
            parser.add_argument("--json", action="store_true", help="print JSON for scripts")
        return parser

    status_ = command("status", "tables of nodes and models (exit 1: a node is down)")
    status_.add_argument(
        "--watch",
        type=float,
        nargs="?",
        const=2.0,
        default=None,
        metavar="SECONDS",
        help="refresh every SECONDS until Ctrl-C",
    )
    command("models", "list the fleet's model catalogue")
    where = command("placement", "where a model would go now, and what would be evicted")
    where.add_argument("model", help="model id or alias")
    where.add_argument("--exclude", default=None, help="nodes to leave out, comma-separated")
    for verb in ("load", "unload"):
        cmd = command(verb, f"{verb} a model on the fleet")
        cmd.add_argument("model", help="model id or alias")
        cmd.add_argument("--node", default=None, help="node name (default: placement's choice)")
    pin_ = command("pin", "keep a model loaded and never evict it")
    pin_.add_argument("model", help="model id or alias")
    pin_.add_argument("--node", default=None, help="the node it must live on (default: any)")
    pin_.add_argument("--save", action="store_true", help="write it into models.toml too")
    unpin_ = command("unpin", "let a pinned model be evicted again")
    unpin_.add_argument("model", help="model id or alias")
    unpin_.add_argument("--save", action="store_true", help="write it into models.toml too")
    for verb, what in (
        ("cordon", "place no new loads on a node (what is loaded keeps serving)"),
        ("uncordon", "let a cordoned or drained node take loads again"),
        ("drain", "cordon a node, move its models elsewhere, unload the rest"),
    ):
        cmd = command(verb, what)
        cmd.add_argument("node", help="node name")


COMMANDS = frozenset(
    {"status", "models", "placement", "load", "unload", "pin", "unpin", "cordon", "uncordon"}
    | {"drain"}
)
"""The commands `add_commands` registers."""


def run(args: argparse.Namespace) -> int:
    """Run the admin command `args.command` parsed by `add_commands`; its exit code."""
    try:
        conn = Connection.resolve(args.url, args.admin_key)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return REFUSED
    common: dict[str, Any] = {
        "url": conn.url,
        "admin_key": conn.admin_key,
        "as_json": args.json,
    }
    name: str = args.command
    if name == "status":
        return status(watch_s=args.watch, **common)
    if name == "models":
        return models(**common)
    if name == "placement":
        return placement(args.model, exclude=args.exclude, **common)
    if name in ("load", "unload"):
        return int(globals()[name](args.model, node=args.node, **common))
    if name == "pin":
        return pin(args.model, node=args.node, save=args.save, **common)
    if name == "unpin":
        return unpin(args.model, save=args.save, **common)
    return int(globals()[name](args.node, **common))


# -- plumbing ----------------------------------------------------------------------------------


def _console() -> Console:
    # Not a terminal (a pipe, a file): no width to fit, so tables grow instead of cutting ids.
    return Console() if sys.stdout.isatty() else Console(width=100_000, color_system=None)


def _line(console: Console, data: Any) -> None:
    text = json.dumps(data, separators=(",", ":"))
    console.print(text, soft_wrap=True, highlight=False, markup=False)


def _act(
    method: str,
    path: str,
    body: dict[str, Any] | None,
    say: Any,
    url: str,
    admin_key: str | None,
    as_json: bool,
    console: Console | None,
) -> int:
    console = console or _console()
    try:
        data = _call(method, Connection(url, admin_key), path, console, body)
    except _Exit as failed:
        return failed.code
    if as_json:
        console.print_json(json.dumps(data))
    else:
        console.print(say(data))
    return OK


def _call(
    method: str,
    conn: Connection,
    path: str,
    console: Console,
    body: dict[str, Any] | None = None,
) -> Any:
    headers = {"authorization": f"Bearer {conn.admin_key}"} if conn.admin_key else {}
    try:
        response = httpx.request(
            method, conn.url.rstrip("/") + path, json=body, headers=headers, timeout=3600.0
        )
    except httpx.TransportError as exc:
        _error(console, f"cannot reach the gateway at {conn.url}: {exc}")
        raise _Exit(UNREACHABLE) from exc
    if response.status_code >= 400:
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text
        _error(console, f"error {response.status_code}: {message}")
        raise _Exit(REFUSED)
    return response.json()


def _error(console: Console, message: str) -> None:
    out = Console(stderr=True) if console.file in (sys.stdout, sys.__stdout__) else console
    out.print(message, style="red", soft_wrap=True, markup=False, highlight=False)


class _Exit(Exception):
    """The command failed; `code` is its exit code (1: the gateway said no, 2: unreachable)."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def _node_state(node: dict[str, Any]) -> str:
    if not node["up"]:
        return f"[red]down[/red] {node.get('error') or ''}"
    if node.get("draining"):
        return "[yellow]draining[/yellow]"
    if node.get("cordoned"):
        return "[yellow]cordoned[/yellow]"
    return "[green]up[/green]"


def _memory(node: dict[str, Any]) -> str:
    capacity, free = node.get("memory_capacity_mb"), node.get("memory_free_mb")
    if capacity is None:
        return "-"
    used = capacity - free if free is not None else None
    return f"{_mb(used)} / {_mb(capacity)}"


def _mb(value: Any) -> str:
    return f"{value:,.0f}" if isinstance(value, int | float) else "-"


def _state(state: str, progress: Any = None) -> str:
    color = {"loaded": "green", "loading": "yellow", "unloading": "yellow", "failed": "red"}
    if state == "loading" and isinstance(progress, dict):
        phase, fraction = progress.get("phase") or "loading", progress.get("fraction")
        state = f"loading: {phase}" + (
            f" {fraction:.0%}" if isinstance(fraction, int | float) else ""
        )
    elif state == "loading" and isinstance(progress, int | float):
        state = f"loading {progress:.0%}"
    key = state.split()[0].rstrip(":")  # "loading: warming 40%" is colored as loading
    return f"[{color[key]}]{state}[/{color[key]}]" if key in color else state


def _ago(stamp: Any) -> str:
    if not isinstance(stamp, int | float) or stamp <= 0:
        return "never"
    seconds = max(0.0, time.time() - stamp)
    if seconds < 60:
        return f"{seconds:.0f}s ago"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.1f}h ago"
