"""Generate docs/configuration.md from the pydantic models in cortex.config (so it cannot drift).

Usage: python scripts/gen_config_docs.py [--check]
With --check, exit 1 when the committed page differs from what the models say.
"""

from __future__ import annotations

import argparse
import sys
import types
import typing
from pathlib import Path

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from cortex import config as cfg

PAGE = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"

INTRO = """# Configuration

cortex reads three TOML files. Each is validated in one place (`cortex.config`): unknown keys,
wrong types, bad listen addresses and URLs, duplicate neuron names or model ids, and aliases that
collide with ids are errors naming the file, the key path (like `neurons[1].endpoint`) and the
line. Check any of them with:

```sh
cortex config check cortex.toml   # or models.toml, neuron.toml (kind detected; --kind forces)
```

Environment variables override keys: `CORTEX_<SECTION>__<KEY>` for cortex.toml
(`CORTEX_GATEWAY__LISTEN=127.0.0.1:9999`, `CORTEX_NEURONS__0__ENDPOINT=http://h:13131`), and
`CORTEX_NEURON__<KEY>` for neuron.toml (`CORTEX_NEURON__MEMORY_MB=4096`). Values are read as TOML
values when they parse as one (numbers, booleans, arrays), else as strings.

Commented examples that load cleanly: `cortex.example.toml`, `models.example.toml`,
`neuron.example.toml` at the repository root.

*This page is generated from the models by `scripts/gen_config_docs.py`; CI checks it is current.*
"""

SECTIONS: list[tuple[str, str, type[BaseModel]]] = [
    ("cortex.toml", "top level", cfg.CortexConfig),
    ("cortex.toml", "[gateway]", cfg.GatewayConfig),
    ("cortex.toml", "[eviction]", cfg.EvictionConfig),
    ("cortex.toml", "[[neurons]]", cfg.NeuronEndpoint),
    ("cortex.toml", "[auth]", cfg.AuthConfig),
    ("cortex.toml", "[[auth.budgets]]", cfg.BudgetConfig),
    ("cortex.toml", "[limits]", cfg.LimitsConfig),
    ("cortex.toml", "[state]", cfg.StateConfig),
    ("models.toml", "[[models]]", cfg.ModelProfile),
    ("neuron.toml", "top level", cfg.NeuronConfig),
    ("neuron.toml", "[fake]", cfg.FakeConfig),
    ("neuron.toml", "[[fake.models]]", cfg.FakeModel),
]


def _type_name(annotation: object) -> str:
    if annotation is type(None):
        return "none"
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(annotation))
    if origin is typing.Literal:
        return " \\| ".join(f'`"{a}"`' for a in typing.get_args(annotation))
    if origin is list:
        (item,) = typing.get_args(annotation)
        return f"list of {_type_name(item)}"
    if isinstance(annotation, type):
        if issubclass(annotation, cfg.Listen):
            return '"HOST:PORT"'
        if issubclass(annotation, BaseModel):
            return "table"
        return {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}.get(
            annotation.__name__, annotation.__name__.lower()
        )
    return str(annotation)


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    if isinstance(value, BaseModel) and not isinstance(value, cfg.Listen):
        return "(table)"
    if value is None:
        return "unset"
    if isinstance(value, list | tuple):
        return "`[]`" if not value else f"`{list(value)}`"
    if isinstance(value, str | cfg.Listen):
        return f'`"{value}"`'
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`"


def render() -> str:
    """The whole page."""
    out = [INTRO]
    current_file = ""
    for file, section, model in SECTIONS:
        if file != current_file:
            out.append(f"\n## {file}\n")
            current_file = file
        out.append(f"\n### {section}\n\n{(model.__doc__ or '').strip()}\n")
        out.append("\n| key | type | default | meaning |\n|---|---|---|---|")
        for name, field in model.model_fields.items():
            if section == "top level" and model is cfg.CortexConfig and name != "models_config":
                continue
            if model is cfg.NeuronConfig and name == "fake":
                continue
            meaning = (field.description or "").replace("|", "\\|").replace("\n", " ")
            out.append(
                f"| `{name}` | {_type_name(field.annotation)} | {_default(field)} | {meaning} |"
            )
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the page is out of date")
    args = parser.parse_args()
    page = render()
    if args.check:
        if not PAGE.exists() or PAGE.read_text() != page:
            print(
                f"{PAGE} is out of date: run `python scripts/gen_config_docs.py`", file=sys.stderr
            )
            return 1
        return 0
    PAGE.write_text(page)
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
