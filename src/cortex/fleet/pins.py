"""Runtime pins: keep a model loaded (optionally on one node) without restarting the gateway.

`Pins(fleet).pin(model, node)` changes the model's placement policy in the fleet's memory (pinned,
and with a node: placed only there), then loads it where it must be; `unpin` gives the policy
its models.toml form back, unpinned. Both last until the gateway restarts, unless `save=True`
writes the change into models.toml (`cortex.config.writing.save_pin`, with a `.bak` backup).
A pinned model is never evicted, and is loaded again when its node comes back.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from cortex.config.writing import save_pin
from cortex.errors import InvalidRequestError, NotFoundError
from cortex.fleet.fleet import Fleet
from cortex.fleet.state import ModelPolicy

__all__ = ["Pins"]


class Pins:
    """Pins and unpins the models of one fleet at runtime.

    Args:
        fleet: the fleet.
        models_path: the models.toml `save=True` writes to (None: saving is refused).
    """

    def __init__(self, fleet: Fleet, models_path: str | Path | None = None) -> None:
        self.fleet = fleet
        self.models_path = Path(models_path) if models_path is not None else None
        self.policies = fleet.ledger.policies
        self._original = dict(self.policies)
        self.runtime: dict[str, dict[str, Any]] = {}
        """Pins changed since start: model -> {"pinned", "node", "saved"}."""

    async def pin(
        self, model: str, node: str | None = None, *, save: bool = False
    ) -> dict[str, Any]:
        """Pin `model` (on `node`, which then is the only node it is placed on) and load it.

        Returns:
            `{"model", "pinned": True, "node", "loaded_on", "saved", "backup"}`.

        Raises:
            ModelNotFoundError: no node knows the model.
            NotFoundError: no such node.
            InvalidRequestError: `save` without a models.toml.
        """
        model_id = self.fleet.resolve(model)
        if node is not None and node not in self.fleet.clients:
            raise NotFoundError(f"no node named {node!r}", param="node")
        self._check_save(save)
        policy = self._policy(model_id)
        nodes = (node,) if node is not None else policy.nodes
        self._set(replace(policy, pinned=True, nodes=nodes), node=node, saved=save)
        self.fleet.lifecycle.forget_failures(model_id)
        plan = await self.fleet.load(model_id, node)
        backup = self._save(model_id, True, [node] if node else None) if save else None
        return {
            "model": model_id,
            "pinned": True,
            "node": node,
            "loaded_on": plan.node,
            "saved": save,
            "backup": backup,
        }

    def unpin(self, model: str, *, save: bool = False) -> dict[str, Any]:
        """Unpin `model`: its profile's placement again, evictable; it stays loaded for now.

        Raises:
            ModelNotFoundError: no node knows the model.
            InvalidRequestError: `save` without a models.toml.
        """
        model_id = self.fleet.resolve(model)
        self._check_save(save)
        original = self._original.get(model_id) or ModelPolicy(id=model_id)
        self._set(replace(original, pinned=False), node=None, saved=save)
        backup = self._save(model_id, False, None) if save else None
        return {"model": model_id, "pinned": False, "saved": save, "backup": backup}

    def _policy(self, model: str) -> ModelPolicy:
        return self.policies.get(model) or ModelPolicy(id=model)

    def _set(self, policy: ModelPolicy, *, node: str | None, saved: bool) -> None:
        # The ledger reads policies from this very dict: the change applies to the next decision.
        self.policies[policy.id] = policy  # type: ignore[index]
        self.runtime[policy.id] = {"pinned": policy.pinned, "node": node, "saved": saved}

    def _check_save(self, save: bool) -> None:
        if save and self.models_path is None:
            raise InvalidRequestError(
                "this gateway has no models.toml to save to (set `models_config` in cortex.toml)",
                param="save",
            )

    def _save(self, model: str, pinned: bool, nodes: list[str] | None) -> str:
        assert self.models_path is not None
        return str(save_pin(self.models_path, model, pinned, nodes))
