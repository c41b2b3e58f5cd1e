"""The merged catalogue as `/v1/models` answers it: the OpenAI list, or the Anthropic page
(when the request carries `anthropic-version`), and one model by name."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cortex.errors import ModelNotFoundError
from cortex.fleet import Fleet
from cortex.fleet.catalogue import CatalogueEntry

__all__ = ["anthropic_models", "catalogue_routes", "openai_models"]

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
            "kind": entry.kind,
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


def catalogue_routes(fleet: Fleet) -> list[Route]:
    """`GET /v1/models` and `GET /v1/models/{model}` over `fleet`'s catalogue."""

    async def models(request: Request) -> Response:
        entries = fleet.catalogue()
        if "anthropic-version" in request.headers:
            return JSONResponse(anthropic_models(entries, request.query_params))
        return JSONResponse(openai_models(entries))

    async def model(request: Request) -> Response:
        name = request.path_params["model"]
        entries = fleet.catalogue()
        if "anthropic-version" in request.headers:
            listing = anthropic_models(entries, {"limit": str(10**9)})
        else:
            listing = openai_models(entries)
        for item in listing["data"]:
            if item["id"] == name:
                return JSONResponse(item)
        raise ModelNotFoundError(f"model {name!r} does not exist in this fleet")

    return [
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/models/{model:path}", model, methods=["GET"]),
    ]
