"""The gateway's admin API: fleet status, load and unload by hand, pins, cordon and drain.

- `GET /admin/status`: nodes (devices, memory, cordoned/draining) and models (state, node,
  in-flight, last use, pins), with drain reports and runtime pins;
- `POST /admin/models/load` and `/admin/models/unload` (`{"model", "node"?}`);
- `POST /admin/models/pin` (`{"model", "node"?, "save"?}`) and `/admin/models/unpin`
  (`{"model", "save"?}`): runtime pins (`cortex.fleet.pins`);
- `POST /admin/nodes/{node}/cordon`, `/uncordon` and `/drain` (`cortex.fleet.maintenance`;
  a drain answers with its report once the node is empty);
- `GET /admin/placement?model=ID`: where the model would go and what would be evicted.

Errors use the OpenAI envelope.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cortex import __version__
from cortex.errors import InvalidRequestError
from cortex.fleet.fleet import Fleet
from cortex.fleet.maintenance import Maintenance
from cortex.fleet.pins import Pins
from cortex.jsonbody import parse_json_object

__all__ = ["AdminAPI", "fleet_lifespan"]


class AdminAPI:
    """The admin routes of one gateway."""

    def __init__(self, fleet: Fleet, *, models_path: str | Path | None = None) -> None:
        self.fleet = fleet
        self.maintenance = Maintenance(fleet)
        self.pins = Pins(fleet, models_path)

    def routes(self) -> list[Route]:
        """The Starlette routes, under `/admin`."""
        return [
            Route("/admin/status", self.status, methods=["GET"]),
            Route("/admin/models/load", self.load, methods=["POST"]),
            Route("/admin/models/unload", self.unload, methods=["POST"]),
            Route("/admin/models/pull", self.pull, methods=["POST"]),
            Route("/admin/models/pin", self.pin, methods=["POST"]),
            Route("/admin/models/unpin", self.unpin, methods=["POST"]),
            Route("/admin/nodes/{node}/cordon", self.cordon, methods=["POST"]),
            Route("/admin/nodes/{node}/uncordon", self.uncordon, methods=["POST"]),
            Route("/admin/nodes/{node}/drain", self.drain, methods=["POST"]),
            Route("/admin/placement", self.placement, methods=["GET"]),
        ]

    async def status(self, request: Request) -> Response:
        """Nodes and models as the fleet sees them now."""
        return JSONResponse(self.status_data())

    def status_data(self) -> dict[str, Any]:
        """What `GET /admin/status` answers (the dashboard's data builds on it)."""
        snapshot = self.fleet.snapshot()
        models = []
        for entry in self.fleet.catalogue():
            placements = []
            for node in snapshot.nodes.values():
                model = node.models.get(entry.id)
                if model is not None:
                    placements.append({"node": node.name, "node_up": node.up, **model.to_dict()})
            models.append({**entry.to_dict(), "nodes": placements})
        return {
            "version": __version__,
            "strategy": self.fleet.strategy,
            "nodes": [node.to_dict() for node in snapshot.nodes.values()],
            "models": models,
            "drains": {n: r.to_dict() for n, r in self.maintenance.reports.items()},
            "pins": self.pins.runtime,
        }

    async def load(self, request: Request) -> Response:
        """Load a model (where placement says, or on `node`), evicting as needed."""
        model, node = _model_and_node(await _body(request))
        plan = await self.fleet.load(model, node)
        return JSONResponse({"loaded": True, **plan.to_dict()})

    async def pull(self, request: Request) -> Response:
        """Pull a model onto `node` (`{"source": "hf:ORG/NAME[:QUANT]", "node": NAME}`; `node`
        may be left out when the fleet has one neuron) without loading it."""
        body = await _body(request)
        source, node = body.get("source"), body.get("node")
        if not isinstance(source, str) or not source:
            raise InvalidRequestError('give the source: {"source": "hf:ORG/NAME"}', param="source")
        if node is None:
            neurons = [n.name for n in self.fleet.snapshot().nodes.values() if n.kind == "neuron"]
            if len(neurons) != 1:
                raise InvalidRequestError("name the node to pull onto", param="node")
            node = neurons[0]
        if not isinstance(node, str):
            raise InvalidRequestError("`node` must be a string", param="node")
        entry = await self.fleet.pull(source, node)
        return JSONResponse({"pulled": True, "node": node, "model": entry})

    async def unload(self, request: Request) -> Response:
        """Unload a model from `node`, or from everywhere it is loaded."""
        model, node = _model_and_node(await _body(request))
        nodes = await self.fleet.unload(model, node)
        return JSONResponse({"model": self.fleet.resolve(model), "unloaded_from": nodes})

    async def pin(self, request: Request) -> Response:
        """Pin a model (on `node`), load it, and with `save` write models.toml."""
        body = await _body(request)
        model, node = _model_and_node(body)
        return JSONResponse(await self.pins.pin(model, node, save=_flag(body, "save")))

    async def unpin(self, request: Request) -> Response:
        """Unpin a model (it stays loaded until evicted); with `save` write models.toml."""
        body = await _body(request)
        model, _ = _model_and_node(body)
        return JSONResponse(self.pins.unpin(model, save=_flag(body, "save")))

    async def cordon(self, request: Request) -> Response:
        """No new loads on the node; what is loaded keeps serving."""
        node = request.path_params["node"]
        self.maintenance.cordon(node)
        return JSONResponse({"node": node, "cordoned": True})

    async def uncordon(self, request: Request) -> Response:
        """The node takes new loads again."""
        node = request.path_params["node"]
        self.maintenance.uncordon(node)
        return JSONResponse({"node": node, "cordoned": False})

    async def drain(self, request: Request) -> Response:
        """Cordon the node, move what is worth keeping elsewhere, unload the rest; the report."""
        report = await self.maintenance.drain(request.path_params["node"])
        return JSONResponse(report.to_dict())

    async def placement(self, request: Request) -> Response:
        """A dry run of placement: `?model=ID` (and `exclude=a,b` to leave nodes out)."""
        model = request.query_params.get("model")
        if not model:
            raise InvalidRequestError("give the model: /admin/placement?model=ID", param="model")
        exclude = [n for n in request.query_params.get("exclude", "").split(",") if n]
        return JSONResponse(self.fleet.plan(model, exclude=exclude).to_dict())


async def _body(request: Request) -> dict[str, Any]:
    return parse_json_object(await request.body() or b"{}")


def _flag(body: dict[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise InvalidRequestError(f"`{name}` must be true or false", param=name)
    return value


def _model_and_node(body: dict[str, Any]) -> tuple[str, str | None]:
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
