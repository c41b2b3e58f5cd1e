"""The gateway's admin API: fleet status, load and unload by hand, placement dry runs.

`GET /admin/status` (nodes with devices and memory; models with state, node, in-flight, last
use, pins), `POST /admin/models/load` and `/admin/models/unload` (`{"model", "node"?}`), and
`GET /admin/placement?model=ID` (where the model would go and what would be evicted, nothing
done). Errors use the OpenAI envelope.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cortex import __version__
from cortex.errors import InvalidRequestError
from cortex.fleet.fleet import Fleet
from cortex.jsonbody import parse_json_object

__all__ = ["AdminAPI", "fleet_lifespan"]


class AdminAPI:
    """The admin routes of one gateway."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet

    def routes(self) -> list[Route]:
        """The Starlette routes, under `/admin`."""
        return [
            Route("/admin/status", self.status, methods=["GET"]),
            Route("/admin/models/load", self.load, methods=["POST"]),
            Route("/admin/models/unload", self.unload, methods=["POST"]),
            Route("/admin/placement", self.placement, methods=["GET"]),
        ]

    async def status(self, request: Request) -> Response:
        """Nodes and models as the fleet sees them now."""
        snapshot = self.fleet.snapshot()
        models = []
        for entry in self.fleet.catalogue():
            placements = []
            for node in snapshot.nodes.values():
                model = node.models.get(entry.id)
                if model is not None:
                    placements.append({"node": node.name, "node_up": node.up, **model.to_dict()})
            models.append({**entry.to_dict(), "nodes": placements})
        return JSONResponse(
            {
                "version": __version__,
                "strategy": self.fleet.strategy,
                "nodes": [node.to_dict() for node in snapshot.nodes.values()],
                "models": models,
            }
        )

    async def load(self, request: Request) -> Response:
        """Load a model (where placement says, or on `node`), evicting as needed."""
        model, node = await _model_and_node(request)
        plan = await self.fleet.load(model, node)
        return JSONResponse({"loaded": True, **plan.to_dict()})

    async def unload(self, request: Request) -> Response:
        """Unload a model from `node`, or from everywhere it is loaded."""
        model, node = await _model_and_node(request)
        nodes = await self.fleet.unload(model, node)
        return JSONResponse({"model": self.fleet.resolve(model), "unloaded_from": nodes})

    async def placement(self, request: Request) -> Response:
        """A dry run of placement: `?model=ID` (and `exclude=a,b` to leave nodes out)."""
        model = request.query_params.get("model")
        if not model:
            raise InvalidRequestError("give the model: /admin/placement?model=ID", param="model")
        exclude = [n for n in request.query_params.get("exclude", "").split(",") if n]
        return JSONResponse(self.fleet.plan(model, exclude=exclude).to_dict())


async def _model_and_node(request: Request) -> tuple[str, str | None]:
    body = parse_json_object(await request.body() or b"{}")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequestError('give the model: {"model": "ID"}', param="model")
    node = body.get("node")
    if node is not None and not isinstance(node, str):
        raise InvalidRequestError("`node` must be a string", param="node")
    return model, node


def fleet_lifespan(fleet: Fleet) -> Callable[[Starlette], AbstractAsyncContextManager[None]]:
    """A Starlette lifespan that starts `fleet` with the app and closes it after."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with fleet:
            yield

    return lifespan
