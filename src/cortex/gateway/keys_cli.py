"""`cortex keys usage`: each key budget's cap, window and spend, from `GET /admin/budgets`."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from cortex.gateway.admin_cli import DEFAULT_URL, Connection

__all__ = ["add_commands", "run"]


def add_commands(sub: Any) -> None:
    """Register `cortex keys usage` on `cortex`'s subparsers."""
    keys = sub.add_parser("keys", help="API keys: token budgets and their spend")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    usage = keys_sub.add_parser(
        "usage", help="spend per key budget ([[auth.budgets]])", description="spend per key"
    )
    usage.add_argument(
        "--url", default=None, help=f"base URL of the gateway (default: $CORTEX_URL, {DEFAULT_URL})"
    )
    usage.add_argument("--admin-key", default=None, help="admin key (default: $CORTEX_ADMIN_KEY)")
    usage.add_argument("--json", action="store_true", help="print JSON for scripts")


def run(args: argparse.Namespace) -> int:
    """Print the budgets' spend; exit 1 when the gateway cannot be asked."""
    try:
        conn = Connection.resolve(args.url, args.admin_key)
        headers = {"authorization": f"Bearer {conn.admin_key}"} if conn.admin_key else {}
        response = httpx.get(f"{conn.url}/admin/budgets", headers=headers, timeout=10)
        response.raise_for_status()
    except (ValueError, httpx.HTTPError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    rows: list[dict[str, Any]] = response.json()["budgets"]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    table = Table("key id", "window", "cap", "spent", "left")
    for row in rows:
        window = row["window"] if row["seconds"] is None else f"rolling {row['seconds']:g} s"
        table.add_row(
            row["key_id"], window, str(row["tokens"]), str(row["spent"]), str(row["left"])
        )
    Console().print(table if rows else "no key has a budget ([[auth.budgets]])")
    return 0
