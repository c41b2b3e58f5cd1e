"""Writing config files back: a small TOML writer and models.toml pin updates (with a backup).

Only what cortex writes itself goes through here: `cortex pin MODEL --save` updating the
`pinned` (and `nodes`) keys of one `[[models]]` table. The file is re-read, changed, validated,
backed up to `models.toml.bak` and replaced atomically; comments in it are not kept (the backup
has them).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cortex.config.schema import ModelsConfig
from cortex.errors import ConfigError

__all__ = ["save_pin", "toml_dumps"]


def toml_dumps(data: Mapping[str, Any]) -> str:
    """Write a config dict as TOML: scalars, lists of scalars, tables and arrays of tables."""
    lines: list[str] = []
    _table(data, [], lines)
    return "\n".join(lines).lstrip("\n") + "\n"


def save_pin(path: str | Path, model: str, pinned: bool, nodes: Sequence[str] | None) -> Path:
    """Set `pinned` (and `nodes`, when given) of `model`'s profile in the models.toml at `path`.

    A model without a profile gets one. The previous file is kept as `<path>.bak`.

    Returns:
        The backup's path.

    Raises:
        ConfigError: the file cannot be read, or the result would not be valid.
    """
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot update it: {exc}", file=str(path)) from None
    profiles: list[dict[str, Any]] = data.setdefault("models", [])
    profile = next((p for p in profiles if p.get("id") == model), None)
    if profile is None:
        profile = {"id": model}
        profiles.append(profile)
    profile["pinned"] = pinned
    if nodes is not None:
        profile["nodes"] = list(nodes)
    try:
        ModelsConfig.model_validate(data)
    except ValueError as exc:
        raise ConfigError(f"the update would be invalid: {exc}", file=str(path)) from None
    backup = path.with_name(path.name + ".bak")
    if path.exists():
        shutil.copy2(path, backup)
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    partial.write_text(toml_dumps(data), encoding="utf-8")
    partial.replace(path)
    return backup


def _table(data: Mapping[str, Any], path: list[str], lines: list[str]) -> None:
    tables: list[tuple[str, Any]] = []
    for key, value in data.items():
        if isinstance(value, Mapping) or (
            isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value)
        ):
            tables.append((key, value))
        elif value is not None:
            lines.append(f"{_key(key)} = {_value(value)}")
    for key, value in tables:
        name = ".".join(_key(part) for part in [*path, key])
        if isinstance(value, Mapping):
            lines.append(f"\n[{name}]")
            _table(value, [*path, key], lines)
        else:
            for item in value:
                lines.append(f"\n[[{name}]]")
                _table(item, [*path, key], lines)


def _key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        return json.dumps(str(value))
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")
