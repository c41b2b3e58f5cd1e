"""Loading the configuration files: TOML, environment overrides, and errors that name the key."""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from cortex.config.schema import (
    ConfigKind,
    CortexConfig,
    KeyedError,
    ModelsConfig,
    NeuronConfig,
)
from cortex.errors import ConfigError

__all__ = [
    "detect_kind",
    "load_config",
    "load_cortex_config",
    "load_models_config",
    "load_neuron_config",
]


_MODELS: dict[ConfigKind, type[BaseModel]] = {
    "cortex": CortexConfig,
    "models": ModelsConfig,
    "neuron": NeuronConfig,
}
_ENV_PREFIX: dict[ConfigKind, str] = {
    "cortex": "CORTEX_",
    "models": "",
    "neuron": "CORTEX_NEURON__",
}


def detect_kind(data: Mapping[str, Any]) -> ConfigKind:
    """Guess which of the three files `data` is from its keys."""
    keys = set(data)
    if keys & {"gateway", "eviction", "neurons", "auth", "limits", "models_config"}:
        return "cortex"
    if isinstance(data.get("models"), list):  # neuron.toml's [models.ID] is a table
        return "models"
    return "neuron"


def _read_toml(path: Path) -> tuple[dict[str, Any], str]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("file not found", file=str(path)) from None
    except OSError as exc:
        raise ConfigError(f"cannot read file: {exc.strerror}", file=str(path)) from None
    except UnicodeDecodeError:
        raise ConfigError("file is not valid UTF-8", file=str(path)) from None
    try:
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"\(at line (\d+), column \d+\)", str(exc))
        line = int(match.group(1)) if match else None
        raise ConfigError(f"not valid TOML: {exc}", file=str(path), line=line) from None


def _env_overrides(data: dict[str, Any], kind: ConfigKind, env: Mapping[str, str]) -> None:
    prefix = _ENV_PREFIX[kind]
    if not prefix:
        return
    fields = set(_MODELS[kind].model_fields)
    for name, raw in sorted(env.items()):
        if not name.startswith(prefix):
            continue
        path = [part.lower() for part in name[len(prefix) :].split("__")]
        if not path or path[0] not in fields or any(not part for part in path):
            continue
        _set_path(data, path, _parse_env_value(raw))


def _parse_env_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _set_path(data: Any, path: list[str], value: Any) -> None:
    node = data
    for i, part in enumerate(path):
        last = i == len(path) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"environment override: no item {part} in the list")
            if last:
                node[int(part)] = value
                return
            node = node[int(part)]
        else:
            if last:
                node[part] = value
                return
            node = node.setdefault(part, {})


def _key_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _line_of(text: str, key: str) -> int | None:
    """Find the line where `key` (like `neurons[1].endpoint`) is set, by walking the headers."""
    parts = [
        (m.group(1), int(m.group(2)) if m.group(2) else None)
        for m in re.finditer(r"([^.\[\]]+)(?:\[(\d+)\])?", key)
    ]
    if not parts:
        return None
    # `aliases[1]` is written on the `aliases = [...]` line: drop the last index.
    wanted = [*parts[:-1], (parts[-1][0], None)]
    counts: dict[str, int] = {}
    table: list[tuple[str, int | None]] = []
    headers: dict[tuple[tuple[str, int | None], ...], int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        header = re.match(r"\s*(\[\[?)\s*([^\]#]+?)\s*\]\]?", line)
        if header:
            name = header.group(2).strip()
            table = [(p, None) for p in name.split(".")]
            if header.group(1) == "[[":
                counts[name] = counts.get(name, -1) + 1
                table[-1] = (table[-1][0], counts[name])
            headers[tuple(table)] = number
            continue
        assignment = re.match(r"\s*[\"']?([A-Za-z0-9_\-]+)[\"']?\s*=", line)
        if assignment and [*table, (assignment.group(1), None)] == wanted:
            return number
    return headers.get(tuple(parts))


def _validate(kind: ConfigKind, data: dict[str, Any], *, file: str, text: str | None) -> BaseModel:
    try:
        return _MODELS[kind].model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        ctx_error = (err.get("ctx") or {}).get("error")
        if isinstance(ctx_error, KeyedError):
            key, message = ctx_error.key, ctx_error.message
        else:
            key = _key_path(tuple(err["loc"]))
            message = _describe(err)
        line = _line_of(text, key) if text is not None and key else None
        more = len(exc.errors()) - 1
        if more:
            message += f" (and {more} more error{'s' if more > 1 else ''})"
        raise ConfigError(message, file=file, key=key or None, line=line) from None


def _describe(err: Any) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    message = str(err["msg"])
    message = message.removeprefix("Value error, ")
    if kind.endswith("_type") or kind.endswith("_parsing"):
        message += f", got {err.get('input')!r}"
    return message


def load_config(
    path: str | Path, *, kind: ConfigKind | None = None, env: Mapping[str, str] | None = None
) -> CortexConfig | ModelsConfig | NeuronConfig:
    """Load any of the three files, detecting which one from its keys unless `kind` is given.

    Args:
        path: the TOML file.
        kind: `cortex`, `models` or `neuron`; detected from content when None.
        env: environment to read `CORTEX_*` overrides from (default `os.environ`).

    Raises:
        ConfigError: naming the file, the key and what was expected.
    """
    path = Path(path)
    data, text = _read_toml(path)
    kind = kind or detect_kind(data)
    _env_overrides(data, kind, os.environ if env is None else env)
    if kind == "cortex" and isinstance(data.get("models_config"), str):
        models_path = Path(data["models_config"]).expanduser()
        if not models_path.is_absolute():
            data["models_config"] = str(path.parent / models_path)
    if kind == "neuron" and isinstance(data.get("models_dirs"), list):
        data["models_dirs"] = [
            str(path.parent / Path(d).expanduser()) if isinstance(d, str) else d
            for d in data["models_dirs"]
        ]
    config = _validate(kind, data, file=str(path), text=text)
    assert isinstance(config, CortexConfig | ModelsConfig | NeuronConfig)
    return config


def load_cortex_config(path: str | Path, *, env: Mapping[str, str] | None = None) -> CortexConfig:
    """Load a gateway `cortex.toml` (with `CORTEX_SECTION__KEY` overrides)."""
    config = load_config(path, kind="cortex", env=env)
    assert isinstance(config, CortexConfig)
    return config


def load_models_config(path: str | Path | None) -> ModelsConfig:
    """Load a `models.toml` of placement profiles (cortex.toml's `models_config`); none when
    `path` is None."""
    if path is None:
        return ModelsConfig()
    config = load_config(path, kind="models")
    assert isinstance(config, ModelsConfig)
    return config


def load_neuron_config(
    path: str | Path | None = None, *, env: Mapping[str, str] | None = None
) -> NeuronConfig:
    """Load a node's `neuron.toml` (with `CORTEX_NEURON__KEY` overrides); defaults when None."""
    if path is None:
        data: dict[str, Any] = {}
        _env_overrides(data, "neuron", os.environ if env is None else env)
        config = _validate("neuron", data, file="<environment>", text=None)
    else:
        config = load_config(path, kind="neuron", env=env)
    assert isinstance(config, NeuronConfig)
    return config
