"""Getting a model served from the command line: `cortex pull`, `cortex serve MODEL|--models-dir`,
and `cortex load` with progress bars (rich: phase, bytes, speed and time left).

`cortex pull ORG/NAME[:QUANT]` downloads into the Hugging Face cache with a bar per file and
one in total (with `--node`, a node of the fleet pulls it and one bar draws the bytes it
reports); `cortex serve` takes a folder, a `.gguf`, or a hub id (pulled first, with the
same bars) plus `--models-dir`, `--device` and `--memory-mb`: everything a neuron.toml says, for
the one-machine case; `cortex load` follows the load on the gateway (`pulling`, `importing`,
`loading`, `warming`) and exits 1 with the node's error when it fails. Nothing here imports
torch: the engine's supported architectures are read when it is installed.
"""

from __future__ import annotations

import argparse
import re
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from cortex.errors import CortexError

__all__ = [
    "add_pull_command",
    "add_serve_options",
    "load",
    "pull",
    "pull_on_node",
    "serve_target",
]

_HUB_ID = re.compile(r"^(hf:)?[\w.-]+/[\w.-]+(:[\w.-]+)?$")


def add_pull_command(sub: Any, formatter: type[argparse.HelpFormatter]) -> None:
    """Register `cortex pull` on the `cortex` subparsers."""
    pull_ = sub.add_parser(
        "pull",
        help="download a model from the Hugging Face hub into its cache",
        description="Download ORG/NAME (safetensors) or ORG/NAME:QUANT (one GGUF quant, e.g. "
        "Q4_K_M) into the Hugging Face cache (HF_HOME / HF_HUB_CACHE), resuming an interrupted "
        "pull. HF_TOKEN opens gated repos; HF_ENDPOINT points at a mirror.",
        formatter_class=formatter,
    )
    pull_.add_argument("model", help="ORG/NAME or ORG/NAME:QUANT")
    pull_.add_argument("--revision", default=None, help="branch, tag or commit (default: main)")
    pull_.add_argument(
        "--node",
        default=None,
        help="pull onto this node of the fleet, through the gateway (default: this machine)",
    )
    pull_.add_argument("--url", default=None, help="the gateway, with --node (or CORTEX_URL)")
    pull_.add_argument(
        "--admin-key", default=None, help="admin key, with --node (or CORTEX_ADMIN_KEY)"
    )


def add_serve_options(serve: argparse.ArgumentParser) -> None:
    """The single-machine options of `cortex serve` (with no --config)."""
    serve.add_argument(
        "model",
        nargs="?",
        default=None,
        help="model to serve and pin: a model folder, a .gguf file, or ORG/NAME[:QUANT] on the "
        "Hugging Face hub (pulled first); none: smollm2-135m-instruct",
    )
    serve.add_argument(
        "--models-dir",
        action="append",
        default=None,
        dest="models_dirs",
        metavar="DIR",
        help="folder of models to list and serve on demand (repeatable)",
    )
    serve.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N (none: auto)")
    serve.add_argument(
        "--memory-mb", type=float, default=None, help="cap on the memory models may take"
    )
    serve.add_argument(
        "--kv-cache-mb",
        type=float,
        default=None,
        help="KV cache budget per loaded model (none: one full context window)",
    )
    serve.add_argument(
        "--quant",
        choices=["none", "bf16", "int8", "int4", "int4-g32", "int4-g64", "int4-g128"],
        default=None,
        help="how to hold model weights (none: as stored; int4 keeps a GGUF's Q4 blocks)",
    )


def _supported() -> tuple[str, ...] | None:
    """The engine's `model_type`s, when the engine is installed (else no check)."""
    try:
        from cortex.engine.models.config import SUPPORTED_MODEL_TYPES
    except ImportError:
        return None
    return tuple(SUPPORTED_MODEL_TYPES)


def _bars(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


def _pull(source: str, revision: str | None, console: Console) -> tuple[str, Path]:
    """Pull with a bar per file and one in total; the model id and where it is."""
    from cortex.neuron.pull import HubRef, PullProgress, plan_pull
    from cortex.neuron.pull import pull as download

    plan = plan_pull(HubRef.parse(source, revision=revision), supported=_supported())
    what = f"GGUF {plan.quant}" if plan.kind == "gguf" else f"safetensors ({plan.architecture})"
    console.print(
        f"pulling [bold]{plan.ref.repo}[/bold]: {what}, {len(plan.files)} files, "
        f"{plan.total_bytes / 1e6:,.1f} MB"
    )
    with _bars(console) as bars:
        total = bars.add_task("total", total=plan.total_bytes)
        files: dict[str, TaskID] = {}

        def show(step: PullProgress) -> None:
            task = files.get(step.file)
            if task is None:
                task = files[step.file] = bars.add_task(step.file, total=step.file_total or None)
            bars.update(task, completed=step.file_bytes)
            bars.update(total, completed=step.done_bytes)

        path = download(plan, on_progress=show)
    return plan.model_id, path


def pull(model: str, revision: str | None = None, *, console: Console | None = None) -> int:
    """`cortex pull ORG/NAME[:QUANT] [--revision R]`: 0 when pulled, 1 with the reason if not."""
    console = console or Console(stderr=True)
    try:
        model_id, path = _pull(model, revision, console)
    except CortexError as exc:
        console.print(f"[red]error:[/red] {exc.message}")
        return 1
    console.print(f"pulled [bold]{model_id}[/bold] into {path}")
    console.print(f"serve it with: cortex serve {model_id}")
    return 0


def serve_target(
    target: str | None, models_dirs: Sequence[str] | None, *, console: Console | None = None
) -> tuple[list[Path], str | None]:
    """The models folders and the model id to pin for `cortex serve [MODEL] [--models-dir ...]`.

    A folder is served under its name, a `.gguf` under its stem, a hub id is pulled first (and
    served as `ORG/NAME`, or `ORG/NAME:QUANT` for a GGUF); any other name must be a model of
    the folders.

    Raises:
        CortexError: the pull failed.
    """
    dirs = [Path(d).expanduser() for d in models_dirs or ()]
    if target is None:
        return dirs, None
    path = Path(target).expanduser()
    if path.exists():
        if path.is_file() and path.suffix != ".gguf":
            raise CortexError(f"{target}: not a model folder or a .gguf file")
        return [*dirs, path.resolve()], path.stem if path.is_file() else path.name
    if _HUB_ID.match(target):
        from cortex.neuron.pull import hub_cache_dir

        model_id, _ = _pull(target, None, console or Console(stderr=True))
        return [*dirs, hub_cache_dir()], model_id
    return dirs, target


def load(
    model: str,
    node: str | None,
    url: str,
    admin_key: str | None,
    *,
    console: Console | None = None,
    poll_s: float = 0.25,
) -> int:
    """`cortex load MODEL [--node NAME]` with a progress bar while the fleet loads it.

    The load runs on a thread; this one polls `/admin/status` for the model's `loading` progress
    (phase, fraction, bytes of a pull). Exit codes as `cortex load` (0, 1 with the node's
    error, 2 unreachable).
    """
    from cortex.gateway import admin_cli

    console = console or Console()
    outcome: dict[str, int] = {}

    def work() -> None:
        outcome["code"] = admin_cli.load(model, node=node, url=url, admin_key=admin_key,
                                         console=console)  # fmt: skip

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    headers = {"authorization": f"Bearer {admin_key}"} if admin_key else {}
    bars = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeRemainingColumn(),
        console=console,
    )
    with bars, httpx.Client(timeout=5.0, headers=headers) as http:
        task = bars.add_task(f"{model}: waiting", total=None, detail="")
        while thread.is_alive():
            thread.join(poll_s)
            progress = _loading(http, url, model)
            if progress is None:
                continue
            phase, fraction = progress.get("phase") or "loading", progress.get("fraction")
            done, total = progress.get("bytes"), progress.get("total_bytes")
            detail = (
                f"{done / 1e6:,.1f}/{total / 1e6:,.1f} MB"
                if isinstance(done, int) and isinstance(total, int)
                else ""
            )
            known = isinstance(fraction, int | float)
            bars.update(
                task,
                description=f"{model}: {phase}",
                completed=fraction if known else 0,
                total=1.0 if known else None,
                detail=detail,
            )
        if outcome.get("code") == 0:
            bars.update(task, description=f"{model}: loaded", completed=1.0, total=1.0)
        else:
            bars.update(task, visible=False)
    return outcome.get("code", 1)


def _loading(http: httpx.Client, url: str, model: str) -> dict[str, Any] | None:
    """The model's progress on the first node loading it, from `/admin/status` (None: none)."""
    try:
        data = http.get(url.rstrip("/") + "/admin/status").json()
    except (httpx.HTTPError, ValueError):
        return None
    for entry in data.get("models", []) if isinstance(data, dict) else []:
        if model in (entry.get("id"), *entry.get("aliases", ())):
            for progress in (entry.get("loading") or {}).values():
                return dict(progress)
    return None


def main_pull(args: argparse.Namespace) -> int:
    """`cortex pull` from parsed arguments (here, or with --node on a node of the fleet)."""
    if args.node is None:
        return pull(args.model, args.revision)
    from cortex.gateway import admin_cli

    if args.revision is not None:
        print("cortex pull: --revision is for a pull on this machine", file=sys.stderr)
        return 2
    conn = admin_cli.Connection.resolve(args.url, args.admin_key)
    return pull_on_node(args.model, args.node, conn.url, conn.admin_key)


def pull_on_node(
    model: str,
    node: str,
    url: str,
    admin_key: str | None,
    *,
    console: Console | None = None,
    poll_s: float = 0.25,
) -> int:
    """`cortex pull MODEL --node NODE`: the node pulls it (`POST /admin/models/pull`) while a bar
    draws its bytes, speed and time left (from the node's pull in `/admin/status`); 0 when
    pulled, 1 with the node's error, 2 when the gateway cannot be reached."""
    console = console or Console(stderr=True)
    source = model if model.startswith("hf:") else f"hf:{model}"
    headers = {"authorization": f"Bearer {admin_key}"} if admin_key else {}
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            outcome["response"] = httpx.post(
                url.rstrip("/") + "/admin/models/pull",
                json={"source": source, "node": node},
                headers=headers,
                timeout=None,  # a pull takes as long as the bytes take
            )
        except httpx.HTTPError as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    bars = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[file]}"),
        console=console,
    )
    with bars, httpx.Client(timeout=5.0, headers=headers) as http:
        task = bars.add_task(f"{node}: {model}", total=None, file="")
        while thread.is_alive():
            thread.join(poll_s)
            progress = _pulling(http, url, node, source)
            done, total = (progress or {}).get("bytes"), (progress or {}).get("total_bytes")
            if isinstance(done, int) and isinstance(total, int) and total > 0:
                file = (progress or {}).get("file")
                bars.update(task, completed=done, total=total, file=file or "")
        response: httpx.Response | None = outcome.get("response")
        if response is not None and response.status_code < 400:
            total = bars.tasks[0].total
            bars.update(task, completed=total or 0, total=total, file="")
        else:
            bars.update(task, visible=False)
    if response is None:
        reason = outcome.get("error")
        console.print(f"[red]error:[/red] cannot reach the gateway at {url}: {reason}")
        return 2
    try:
        data = response.json()
    except ValueError:
        data = {}
    if response.status_code >= 400:
        error = data.get("error") if isinstance(data, dict) else None
        message = error.get("message") if isinstance(error, dict) else response.text
        console.print(f"[red]error {response.status_code}:[/red] {message}")
        return 1
    entry = data.get("model") or {}
    console.print(f"pulled [bold]{entry.get('id', model)}[/bold] on {node}")
    return 0


def _pulling(http: httpx.Client, url: str, node: str, source: str) -> dict[str, Any] | None:
    """`node`'s pull of `source` as the gateway last saw it in `/admin/status` (None: none)."""
    try:
        data = http.get(url.rstrip("/") + "/admin/status").json()
    except (httpx.HTTPError, ValueError):
        return None
    wanted = source.removeprefix("hf:")
    for entry in data.get("nodes", []) if isinstance(data, dict) else []:
        if not isinstance(entry, dict) or entry.get("name") != node:
            continue
        for pull in entry.get("pulls") or ():
            if isinstance(pull, dict) and str(pull.get("source", "")).removeprefix("hf:") == wanted:
                return pull
    return None


def main_serve_target(args: argparse.Namespace) -> tuple[list[Path], str | None] | int:
    """`cortex serve`'s single-machine flags resolved (pulling a hub id), or an exit code."""
    one_machine = (args.model, args.models_dirs, args.device, args.memory_mb, args.kv_cache_mb)
    if args.config is not None and any(v is not None for v in one_machine):
        print(
            "cortex serve: MODEL, --models-dir, --device, --memory-mb and --kv-cache-mb are for "
            "the one-machine mode; with --config, give them to each cortex-neuron",
            file=sys.stderr,
        )
        return 2
    try:
        return serve_target(args.model, args.models_dirs)
    except CortexError as exc:
        print(f"cortex serve: {exc.message}", file=sys.stderr)
        return 1
