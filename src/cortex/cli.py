"""The `cortex`, `cortex-gateway` and `cortex-neuron` command lines (each a thin library call)."""

from __future__ import annotations

import argparse
import importlib
import itertools
import sys
from collections.abc import Callable, Sequence
from typing import Any

from cortex import __version__, cli_models
from cortex.errors import ConfigError
from cortex.gateway import admin_cli, keys_cli

__all__ = ["gateway_main", "main", "neuron_main"]


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Show every option's default and keep the descriptions' line breaks."""


def _not_available(what: str) -> int:
    print(f"cortex: {what} is not available yet in this version of cortex.", file=sys.stderr)
    return 2


# What a neuron needs beyond the base (gateway) install: the `engine` extra's import names.
ENGINE_MODULES = ("torch", "tokenizers", "jinja2", "gguf", "numpy")
ENGINE_HINT = "pip install 'cortex-fleet[engine]'"


def missing_engine() -> list[str]:
    """The engine extra's modules that this Python cannot import (empty on a neuron host)."""
    import importlib.util

    return [name for name in ENGINE_MODULES if importlib.util.find_spec(name) is None]


def _require_engine(what: str) -> int:
    """0 when the engine extra is installed; else say in one line how to get it (exit 2)."""
    missing = missing_engine()
    if not missing:
        return 0
    print(
        f"cortex: {what} runs models and needs the engine extra (missing: {', '.join(missing)}); "
        f"install it with: {ENGINE_HINT}",
        file=sys.stderr,
    )
    return 2


def _call(module: str, name: str, *args: Any, **kwargs: Any) -> int:
    """Call `module.name(*args, **kwargs)`, or say the feature is not available yet (exit 2)."""
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module.startswith(exc.name):
            return _not_available(f"{module}.{name}")
        raise
    func: Callable[..., Any] | None = getattr(mod, name, None)
    if func is None:
        return _not_available(f"{module}.{name}")
    result = func(*args, **kwargs)
    return int(result or 0)


def build_parser() -> argparse.ArgumentParser:
    """The `cortex` argument parser (exposed for the docs and tests)."""
    parser = argparse.ArgumentParser(
        prog="cortex",
        description="Run local LLMs across a fleet of GPU hosts behind one OpenAI + Anthropic "
        "compatible API.",
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"cortex {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    serve = sub.add_parser(
        "serve",
        help="run the gateway (with no config: plus an embedded neuron serving the default model)",
        description="Run the gateway. With --config, in front of the neurons it names; with none, "
        "with an in-process neuron serving smollm2-135m-instruct on 127.0.0.1:31313.",
        formatter_class=_Formatter,
    )
    serve.add_argument("--config", default=None, help="path of cortex.toml (none: embedded mode)")
    serve.add_argument(
        "--listen", default=None, help="API address HOST:PORT (overrides [gateway] listen)"
    )
    serve.add_argument(
        "--metrics-listen",
        default=None,
        help="metrics address HOST:PORT (overrides [gateway] metrics_listen)",
    )
    cli_models.add_serve_options(serve)
    cli_models.add_pull_command(sub, _Formatter)

    admin_cli.add_commands(sub)
    keys_cli.add_commands(sub)

    config = sub.add_parser(
        "config", help="work with configuration files", formatter_class=_Formatter
    )
    config_sub = config.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    check = config_sub.add_parser(
        "check",
        help="validate a cortex.toml, models.toml or neuron.toml and print it resolved",
        formatter_class=_Formatter,
    )
    check.add_argument("file", help="the TOML file")
    check.add_argument(
        "--kind",
        choices=["cortex", "models", "neuron"],
        default=None,
        help="which kind of file (default: detected from its keys)",
    )

    imp = sub.add_parser(
        "import",
        help="import a GGUF checkpoint into a safetensors model folder",
        formatter_class=_Formatter,
    )
    imp.add_argument("file", help="the .gguf file")
    imp.add_argument(
        "--out", default=None, help="output folder (default: in the cortex cache folder)"
    )
    imp.add_argument(
        "--dtype", choices=["float32", "bfloat16"], default="float32", help="weights dtype"
    )
    imp.add_argument(
        "--quant",
        choices=["none", "bf16", "int8", "int4"],
        default="none",
        help="keep matrices quantized: int4 (Q4 blocks copied as they are) or int8",
    )
    return parser


def _config_check(file: str, kind: str | None) -> int:
    from cortex.config import load_config

    try:
        config = load_config(file, kind=kind)  # type: ignore[arg-type]
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    name = type(config).__name__.removesuffix("Config").lower() or "cortex"
    print(f"# {file}: a valid {name} configuration. Resolved (defaults filled in):")
    print(config.model_dump_json(indent=2))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `cortex`."""
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    command: str = args.command
    if command == "config":
        return _config_check(args.file, args.kind)
    if command == "serve":
        config = None
        if args.config is not None:
            from cortex.config import load_cortex_config

            config = load_cortex_config(args.config)
        if config is None and (code := _require_engine("cortex serve with no --config")):
            return code
        target = cli_models.main_serve_target(args)  # pulls a hub id first
        if isinstance(target, int):
            return target
        models_dirs, model = target
        neuron = None
        flags = (args.device, args.memory_mb, args.kv_cache_mb, args.quant)
        if config is None and (models_dirs or any(flags)):
            from cortex.config import NeuronConfig

            neuron = NeuronConfig(
                name="local",
                models_dirs=models_dirs,
                device=args.device or "auto",
                memory_mb=args.memory_mb,
                kv_cache_mb=args.kv_cache_mb,
                quant=args.quant,
            )
        return _call(
            "cortex.gateway.server",
            "serve",
            config,
            listen=args.listen,
            metrics_listen=args.metrics_listen,
            neuron=neuron,
            model=model,
        )
    if command == "pull":  # here it needs the engine's list of architectures; with --node not
        if args.node is None and (code := _require_engine("cortex pull")):
            return code
        return cli_models.main_pull(args)
    if command == "load" and not args.json:  # a bar while the fleet loads it
        conn = admin_cli.Connection.resolve(args.url, args.admin_key)
        return cli_models.load(args.model, args.node, conn.url, conn.admin_key)
    if command == "import":
        if code := _require_engine("cortex import"):
            return code
        return _call(
            "cortex.engine.gguf", "main_import", args.file, args.out, args.dtype, args.quant
        )
    if command in admin_cli.COMMANDS:
        return admin_cli.run(args)
    if command == "keys":
        return keys_cli.run(args)
    raise AssertionError(f"unhandled command {command!r}")


def gateway_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `cortex-gateway` (its own options: see `cortex-gateway --help`)."""
    return _call("cortex.gateway.server", "main", list(argv) if argv is not None else None)


def neuron_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `cortex-neuron` (its own options: see `cortex-neuron --help`)."""
    args = list(argv) if argv is not None else sys.argv[1:]
    fake = "--harness=fake" in args or any(
        a == "--harness" and b == "fake" for a, b in itertools.pairwise(args)
    )
    runs_models = not fake and not {"-h", "--help", "--version"} & set(args)
    if runs_models and (code := _require_engine("cortex-neuron")):
        return code
    return _call("cortex.neuron.server", "main", list(argv) if argv is not None else None)


if __name__ == "__main__":
    sys.exit(main())
