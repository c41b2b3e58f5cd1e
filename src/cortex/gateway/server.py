"""`cortex-gateway` and `cortex serve`: the gateway's API and metrics listeners over a Fleet.

With a cortex.toml, the gateway fronts the neurons it names. With none, it runs an embedded
in-process neuron serving the default model (loaded at start) on 127.0.0.1:31313, metrics on
127.0.0.1:31314: one command from a fresh install to an answer.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import uvicorn

from cortex import __version__
from cortex.config import CortexConfig, Listen, NeuronConfig, load_cortex_config
from cortex.drain import Drain, DrainingServer
from cortex.errors import ConfigError
from cortex.fleet.fleet import Fleet
from cortex.gateway.access_log import JSONFormatter
from cortex.gateway.app import create_gateway_app
from cortex.gateway.budgets import budgets_from_config
from cortex.gateway.metrics import GatewayMetrics, create_metrics_app
from cortex.gateway.shared_limits import shared_limiter

__all__ = ["EMBEDDED_LISTEN", "EMBEDDED_METRICS_LISTEN", "build_parser", "main", "run", "serve"]

log = logging.getLogger("cortex.gateway")

KEEPALIVE_S = 75
"""Seconds an idle client connection is kept open (nginx's default; longer than clients' pools)."""
EMBEDDED_LISTEN = "127.0.0.1:31313"
EMBEDDED_METRICS_LISTEN = "127.0.0.1:31314"


def build_parser() -> argparse.ArgumentParser:
    """The `cortex-gateway` argument parser."""
    parser = argparse.ArgumentParser(
        prog="cortex-gateway",
        description="Serve one OpenAI + Anthropic compatible API in front of the neurons of a "
        "cortex.toml (with no config: an embedded neuron serving the default model).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"cortex-gateway {__version__}")
    parser.add_argument("--config", default=None, help="path of cortex.toml (none: embedded)")
    parser.add_argument(
        "--listen", default=None, help="API address HOST:PORT (overrides [gateway] listen)"
    )
    parser.add_argument(
        "--metrics-listen",
        default=None,
        help="metrics address HOST:PORT (overrides [gateway] metrics_listen)",
    )
    parser.add_argument("--log-level", default="info", help="log level (debug, info, warning)")
    parser.add_argument(
        "--log-format",
        choices=["plain", "json"],
        default="plain",
        help="log lines as text, or one JSON object each (the access log's fields included)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """`cortex-gateway [--config cortex.toml] [--listen HOST:PORT] [--metrics-listen HOST:PORT]
    [--log-level LEVEL]`; returns the exit code (2 for a bad config or address)."""
    args = build_parser().parse_args(list(argv) if argv is not None else None)
    try:
        config = load_cortex_config(args.config) if args.config else None
    except ConfigError as exc:
        print(f"cortex-gateway: {exc}", file=sys.stderr)
        return 2
    return serve(
        config,
        listen=args.listen,
        metrics_listen=args.metrics_listen,
        log_level=args.log_level,
        log_format=args.log_format,
    )


def serve(
    config: CortexConfig | None = None,
    listen: str | None = None,
    metrics_listen: str | None = None,
    *,
    log_level: str = "info",
    log_format: str = "plain",
    neuron: NeuronConfig | None = None,
    model: str | None = None,
) -> int:
    """Run the gateway until SIGINT or SIGTERM; returns the exit code.

    Args:
        config: the gateway configuration; None runs the embedded default neuron instead.
        neuron: with no `config`, the embedded neuron's settings (`models_dirs`, `device`,
            `memory_mb`...; `cortex serve --models-dir DIR ...`); None: the defaults.
        model: with no `config`, the model to pin and to answer `claude-*` names with
            (default: the default model).
        listen: `HOST:PORT` of the API (default: the config's, or 127.0.0.1:31313 embedded).
        metrics_listen: `HOST:PORT` of the metrics listener (default: the config's, or
            127.0.0.1:31314 embedded).
        log_level: the logging level.
        log_format: `plain` lines, or `json` (one object per line; `cortex.gateway.access_log`).
    """
    handler = logging.StreamHandler()
    if log_format == "json":
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=log_level.upper(), handlers=[handler])
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per poll is noise
    default_api, default_metrics = (
        config.bind() if config else (EMBEDDED_LISTEN, EMBEDDED_METRICS_LISTEN)
    )
    try:
        api = _listen(listen, default_api, "--listen")
        metrics_at = _listen(metrics_listen, default_metrics, "--metrics-listen")
    except ConfigError as exc:
        print(f"cortex: {exc}", file=sys.stderr)
        return 2
    if not api.loopback and not (config and config.secured):
        log.warning(
            "listening on %s with no API keys: anyone who can reach it may use and administer "
            "the fleet (set [auth] keys, or listen on 127.0.0.1)",
            api,
        )
    metrics = GatewayMetrics()
    harness = _engine(neuron) if config is None and neuron is not None else None
    if config is None:
        from cortex.embedded import embedded_fleet  # the neuron comes only with this mode

        fleet = embedded_fleet(harness, model=model, observer=metrics, poll_interval_s=2.0)
    else:
        fleet = Fleet.from_config(config, observer=metrics)
    settings = config or CortexConfig()
    drain = Drain(settings.gateway.drain_timeout_s)
    app = create_gateway_app(
        fleet,
        auth=settings.auth,
        metrics=metrics,
        max_body_mb=settings.gateway.max_body_mb,
        limits=settings.limits,
        cors_origins=settings.gateway.cors_origins,
        drain=drain,
        models_path=settings.models_config,
        budgets=budgets_from_config(settings),
        limiter=shared_limiter(settings),
    )
    metrics_app = create_metrics_app(metrics)
    # What start-up built (modules, config, the app) lives as long as the process: out of the
    # collector's sight, a collection walks only what requests made.
    gc.freeze()
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(run(fleet, app, metrics_app, api, metrics_at, log_level, drain=drain))
    return 0


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop when it is installed (it halves the relay's cost per token)."""
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


async def run(
    fleet: Fleet,
    app: Any,
    metrics_app: Any,
    listen: Listen,
    metrics_listen: Listen,
    log_level: str,
    *,
    drain: Drain | None = None,
) -> None:
    """Start `fleet`, serve `app` and `metrics_app` on their listeners until a signal, close.

    With `drain` (the one `app` counts requests in), the first signal drains: in-flight
    requests finish while new ones get 503, then the listeners close.
    """
    level = log_level.lower()
    api_config = uvicorn.Config(
        app,
        host=listen.host,
        port=listen.port,
        log_level=level,
        access_log=False,
        timeout_graceful_shutdown=5 if drain is not None else None,  # the drain waited already
        # Idle connections outlive the clients' pools (httpx, the SDKs: 5 s), so a client never
        # sends a request on a connection the server is closing at that moment (a reset).
        timeout_keep_alive=KEEPALIVE_S,
    )
    api = DrainingServer(api_config, drain) if drain is not None else uvicorn.Server(api_config)
    scrape = _MetricsServer(
        uvicorn.Config(
            metrics_app,
            host=metrics_listen.host,
            port=metrics_listen.port,
            log_level=level,
            access_log=False,
            lifespan="off",
        )
    )
    # uvicorn re-raises the signal that stopped it to the handler it found: give it a harmless
    # one, so that SIGTERM ends in the orderly shutdown below rather than the default kill.
    previous = {sig: signal.signal(sig, _ignore) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        async with fleet:
            log.info("cortex gateway on http://%s (metrics on http://%s)", listen, metrics_listen)
            scraper = asyncio.create_task(scrape.serve())
            try:
                await api.serve()
            finally:
                scrape.should_exit = True
                await scraper
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class _MetricsServer(uvicorn.Server):
    """The metrics listener: it leaves signals to the API server (one handler per process)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _ignore(sig: int, frame: Any) -> None:
    """Stand-in signal handler (see `run`)."""


def _engine(neuron: NeuronConfig) -> Any:
    """The embedded neuron's engine harness for the one-machine flags (imports torch)."""
    from cortex.neuron.engine_harness import EngineHarness

    return EngineHarness.from_config(neuron)


def _listen(value: str | None, default: Listen | str, flag: str) -> Listen:
    try:
        return Listen.model_validate(value if value is not None else default)
    except ValueError as exc:
        raise ConfigError(str(exc).splitlines()[-1].strip(), key=flag) from None
