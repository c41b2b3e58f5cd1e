"""The merged catalogue as `/v1/models` answers it: the OpenAI list, or the Anthropic page."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from cortex.fleet.catalogue import CatalogueEntry

__all__ = ["anthropic_models", "openai_models"]

_EPOCH_RFC3339 = "1970-01-01T00:00:00Z"


def _names(entries: Sequence[CatalogueEntry]) -> list[tuple[str, CatalogueEntry]]:
    """Each model under its id, then under each alias (clients pick either)."""
    out = [(e.id, e) for e in entries]
    out += [(alias, e) for e in entries for alias in e.aliases]
    return out


def openai_models(entries: Sequence[CatalogueEntry]) -> dict[str, Any]:
    """`{"object": "list", "data": [...]}` with each model's context length (also as
    `max_model_len`, which vLLM-style clients read) and where it is loaded."""
    data = []
    for name, entry in _names(entries):
        item: dict[str, Any] = {
            "id": name,
            "object": "model",
            "created": 0,
            "owned_by": "cortex",
            "context_length": entry.context_length,
            "max_model_len": entry.context_length,
            "loaded_on": list(entry.loaded_on),
            "loadable_on": list(entry.loadable_on),
            "pinned": entry.pinned,
        }
        if entry.loading:  # phase and fraction of each load in progress (a pull, an import...)
            item["loading"] = {node: dict(p) for node, p in entry.loading.items()}
        if name != entry.id:
            item["alias_of"] = entry.id
        data.append(item)
    return {"object": "list", "data": data}


def anthropic_models(entries: Sequence[CatalogueEntry], query: Mapping[str, str]) -> dict[str, Any]:
    """The Anthropic `ModelList` page (`limit`, `after_id`, `before_id` honoured)."""
    data = [
        {
            "type": "model",
            "id": name,
            "display_name": name if name == entry.id else f"{name} ({entry.id})",
            "created_at": _EPOCH_RFC3339,
            "max_input_tokens": entry.context_length,
        }
        for name, entry in _names(entries)
    ]
    ids = [d["id"] for d in data]
    if query.get("after_id") in ids:
        data = data[ids.index(query["after_id"]) + 1 :]
    elif query.get("before_id") in ids:
        data = data[: ids.index(query["before_id"])]
    limit = query.get("limit", "")
    size = int(limit) if limit.isdigit() and int(limit) > 0 else 20
    page, more = data[:size], len(data) > size
    return {
        "data": page,
        "has_more": more,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
    }
