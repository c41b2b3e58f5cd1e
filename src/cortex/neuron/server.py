"""`cortex-neuron`: read neuron.toml and the flags, build the harness and the app, run uvicorn.

SIGTERM (or Ctrl-C) shuts down gracefully (`cortex.drain`): in-flight requests get the drain
timeout to finish while new ones get 503, then the listener closes, every model is unloaded, and
the process exits 0.
"""

from __future__ import annotations

import argparse
import logging
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from cortex import __version__
from cortex.config import NeuronConfig, load_neuron_config
from cortex.errors import ConfigError
from cortex.neuron.catalogue import DEFAULT_MODEL_ID
from cortex.neuron.harness import Harness

__all__ = ["build_harness", "build_parser", "main", "resolve_config", "serve_neuron"]

DRAIN_TIMEOUT_S = 30.0
KEEPALIVE_S = 75
"""Seconds an idle connection is kept open (longer than the gateway's pool keeps one)."""


def build_parser() -> argparse.ArgumentParser:
    """The `cortex-neuron` argument parser."""
    parser = argparse.ArgumentParser(
        prog="cortex-neuron",
        description="Serve this node's models over the neuron wire API (flags override the "
        "config file; with no config: the default model on 127.0.0.1:13131).",
    )
    parser.add_argument("--version", action="version", version=f"cortex-neuron {__version__}")
    parser.add_argument("--config", type=Path, default=None, help="path of neuron.toml")
    parser.add_argument(
        "--listen",
        default=None,
        help="address HOST:PORT (default 127.0.0.1:13131, or 0.0.0.0:13131 with a token)",
    )
    parser.add_argument(
        "--models-dir",
        action="append",
        type=Path,
        default=None,
        dest="models_dirs",
        help="folder to scan for models (repeatable; replaces the file's models_dirs)",
    )
    parser.add_argument("--memory-mb", type=float, default=None, help="cap on model memory")
    parser.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N")
    parser.add_argument(
        "--harness", choices=["engine", "fake"], default="engine", help="what serves the models"
    )
    parser.add_argument("--name", default=None, help="node name (default: the host name)")
    parser.add_argument(
        "--token",
        default=None,
        help="bearer token required on every route but /health (prefer CORTEX_NEURON__TOKEN: "
        "flags show in `ps`)",
    )
    parser.add_argument(
        "--drain-timeout-s",
        type=float,
        default=DRAIN_TIMEOUT_S,
        help="seconds in-flight requests may finish at shutdown or unload",
    )
    parser.add_argument("--log-level", default="info", help="uvicorn's log level")
    return parser


def resolve_config(args: argparse.Namespace) -> NeuronConfig:
    """The config file (or defaults) with the flags applied over it.

    With no config file and no models folders, the default model is preloaded.

    Raises:
        ConfigError: the file or a flag is invalid.
    """
    config = load_neuron_config(args.config)
    data = config.model_dump(exclude_unset=True)  # what is unset keeps its default (`bind`)
    flags = {
        "listen": args.listen,
        "models_dirs": args.models_dirs,
        "memory_mb": args.memory_mb,
        "device": args.device,
        "name": args.name,
        "token": args.token,
    }
    data.update({key: value for key, value in flags.items() if value is not None})
    if args.config is None and not data.get("preload") and not data.get("models_dirs"):
        data["preload"] = [DEFAULT_MODEL_ID]  # no config: serve the default model at once
    try:
        return NeuronConfig.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        key = ".".join(str(part) for part in error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        raise ConfigError(
            message, file="<command line>", key=f"--{key.replace('_', '-')}"
        ) from None


def build_harness(
    config: NeuronConfig, kind: str = "engine", *, drain_timeout_s: float = DRAIN_TIMEOUT_S
) -> Harness:
    """The harness named `kind` (`engine` or `fake`) for `config`."""
    name = config.name or socket.gethostname()
    if kind == "fake":
        from cortex.testing import FakeHarness

        fake = FakeHarness.from_config(config, node=name)
        fake.registry.drain_timeout_s = drain_timeout_s
        return fake
    if kind == "engine":
        from cortex.neuron.engine_harness import EngineHarness

        return EngineHarness.from_config(config, drain_timeout_s=drain_timeout_s)
    raise ValueError(f"unknown harness {kind!r}: expected 'engine' or 'fake'")


def serve_neuron(
    config: NeuronConfig,
    harness_kind: str = "engine",
    *,
    drain_timeout_s: float = DRAIN_TIMEOUT_S,
    log_level: str = "info",
) -> None:
    """Run the neuron in this process until SIGTERM or SIGINT (then drain and unload)."""
    import uvicorn

    from cortex.drain import Drain, DrainingServer
    from cortex.neuron.app import create_neuron_app

    harness = build_harness(config, harness_kind, drain_timeout_s=drain_timeout_s)
    drain = Drain(drain_timeout_s)
    listen = config.bind()
    if not listen.loopback and config.token is None:
        logging.getLogger("cortex.neuron").warning(
            "listening on %s with no token: anyone who can reach it may run and unload its "
            "models, around the gateway's keys and limits (set `token`, or listen on 127.0.0.1)",
            listen,
        )
    app = create_neuron_app(
        harness,
        name=config.name or socket.gethostname(),
        token=config.token.get_secret_value() if config.token else None,
        preload=config.preload,
        drain_timeout_s=drain_timeout_s,
        drain=drain,
    )
    server = DrainingServer(
        uvicorn.Config(
            app,
            host=listen.host,
            port=listen.port,
            log_level=log_level,
            timeout_graceful_shutdown=5,  # the drain has waited already
            # Idle connections outlive the gateway's pools (5 s), so the gateway never sends a
            # request on a connection being closed (a reset it would take for a dead node).
            timeout_keep_alive=KEEPALIVE_S,
            access_log=False,
        ),
        drain,
    )
    server.run()


def main(argv: Sequence[str] | None = None) -> int:
    """`cortex-neuron [--config neuron.toml] [--listen HOST:PORT] ...`; the exit code."""
    args = build_parser().parse_args(list(argv) if argv is not None else None)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    try:
        config = resolve_config(args)
    except ConfigError as exc:
        print(f"cortex-neuron: {exc}", file=sys.stderr)
        return 2
    serve_neuron(
        config, args.harness, drain_timeout_s=args.drain_timeout_s, log_level=args.log_level
    )
    return 0
