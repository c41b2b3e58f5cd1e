"""A fleet with its neuron inside this process: the composition of the neuron and the fleet.

The fleet knows nothing of the neuron (it sits beside the gateway, above the fleet); this module
builds the neuron's app, a client reaching it in-process, and hands both, with the app's
lifespan, to a `Fleet` through its public parameters. `cortex serve` and embedding programs use
`embedded_fleet()`.
"""

from __future__ import annotations

from typing import Any

from cortex.config import ModelProfile, ModelsConfig, NeuronConfig
from cortex.fleet import Fleet, FleetObserver, in_process_client

__all__ = ["embedded_fleet"]


def embedded_fleet(
    harness: Any = None,
    *,
    name: str = "local",
    model: str | None = None,
    models: ModelsConfig | None = None,
    observer: FleetObserver | None = None,
    **kwargs: Any,
) -> Fleet:
    """A fleet of one neuron living in this process (no server, no port).

    With no harness it is the engine serving the default model (smollm2-135m-instruct), which
    is pinned: loaded at start. The neuron's app is reached in-process, streaming.

    Args:
        harness: the neuron's harness (`cortex.testing.FakeHarness` for tests); None: the
            engine over the neuron's default model search (imports torch when it loads).
        name: the node's name.
        model: the model to pin and to answer unknown `claude-*` names with (default: the
            default model).
        models: profiles (default: one pinning `model`).
        observer: receives fleet events.
        **kwargs: more `Fleet` options (`poll_interval_s`, `strategy`...).

    Example:
        ```python
        async with embedded_fleet() as fleet:
            print(await fleet.complete({"model": "smollm2-135m-instruct", "messages": [...]}))
        ```
    """
    from cortex.neuron.app import create_neuron_app
    from cortex.neuron.catalogue import DEFAULT_MODEL_ID

    if harness is None:
        from cortex.neuron.engine_harness import EngineHarness

        harness = EngineHarness.from_config(NeuronConfig(name=name))
    app = create_neuron_app(harness, name=name)
    model = model or DEFAULT_MODEL_ID
    if models is None:
        models = ModelsConfig(models=[ModelProfile(id=model, pinned=True)])
    return Fleet(
        [in_process_client(name, app)],
        models=models,
        observer=observer,
        default_model=model,
        lifespans=[app.router.lifespan_context(app)],
        **kwargs,
    )
