"""The merged catalogue as `/v1/models` answers it: the OpenAI list, or the Anthropic page
(when the request carries `anthropic-version`), and one model by name.

The listings are made once per catalogue the fleet builds (it builds one only when something
it shows changed), so a call costs the same at 6 nodes as at 100 while the fleet is still.
"""

from __future__ import annotations

import json
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
    return _anthropic_page(_anthropic_items(entries), query)


def _anthropic_items(entries: Sequence[CatalogueEntry]) -> list[dict[str, Any]]:
    return [
        {
            "type": "model",
            "id": name,
            "display_name": name if name == entry.id else f"{name} ({entry.id})",
            "created_at": _EPOCH_RFC3339,
            "max_input_tokens": entry.context_length,
        }
        for name, entry in _names(entries)
    ]


def _anthropic_page(items: list[dict[str, Any]], query: Mapping[str, str]) -> dict[str, Any]:
    data = items
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


class _Listings:
    """Both dialects' listings of one catalogue, made again only when the fleet hands out a
    new catalogue (`Fleet.catalogue()` returns the very same tuple while nothing changed)."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self._entries: Sequence[CatalogueEntry] | None = None
        self._openai: bytes = b""
        self._by_name: dict[str, dict[str, Any]] = {}
        self._anthropic: list[dict[str, Any]] = []

    def _fresh(self) -> None:
        entries = self.fleet.catalogue()
        if entries is self._entries:
            return
        listing = openai_models(entries)
        self._openai = json.dumps(listing, ensure_ascii=False, separators=(",", ":")).encode()
        self._by_name = {}
        for item in listing["data"]:  # an alias never hides a model of the same name
            self._by_name.setdefault(item["id"], item)
        self._anthropic = _anthropic_items(entries)
        self._entries = entries

    def openai(self) -> bytes:
        self._fresh()
        return self._openai

    def openai_item(self, name: str) -> dict[str, Any] | None:
        self._fresh()
        return self._by_name.get(name)

    def anthropic(self, query: Mapping[str, str]) -> dict[str, Any]:
        self._fresh()
        return _anthropic_page(self._anthropic, query)

    def anthropic_item(self, name: str) -> dict[str, Any] | None:
        self._fresh()
        return next((item for item in self._anthropic if item["id"] == name), None)


def catalogue_routes(fleet: Fleet) -> list[Route]:
    """`GET /v1/models` and `GET /v1/models/{model}` over `fleet`'s catalogue."""
    listings = _Listings(fleet)

    async def models(request: Request) -> Response:
        if "anthropic-version" in request.headers:
            return JSONResponse(listings.anthropic(request.query_params))
        return Response(listings.openai(), media_type="application/json")

    async def model(request: Request) -> Response:
        name = request.path_params["model"]
        if "anthropic-version" in request.headers:
            item = listings.anthropic_item(name)
        else:
            item = listings.openai_item(name)
        if item is None:
            raise ModelNotFoundError(f"model {name!r} does not exist in this fleet")
        return JSONResponse(item)

    return [
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/models/{model:path}", model, methods=["GET"]),
    ]
