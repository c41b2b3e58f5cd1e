"""Configuration: pydantic models of cortex.toml, models.toml and neuron.toml, and their loaders.

Every loader raises `cortex.errors.ConfigError` naming the file, the key path (like
`neurons[1].endpoint`), the line where it can be found, and what was expected. Unknown keys are
errors. Environment variables override keys: `CORTEX_GATEWAY__LISTEN=127.0.0.1:9999` sets
`[gateway] listen` of cortex.toml, `CORTEX_NEURON__MEMORY_MB=4096` sets `memory_mb` of
neuron.toml; values are read as TOML values when they parse as one (numbers, booleans, arrays),
else as strings.
"""

from __future__ import annotations

from cortex.config.loading import (
    detect_kind,
    load_config,
    load_cortex_config,
    load_models_config,
    load_neuron_config,
)
from cortex.config.schema import (
    AuthConfig,
    BudgetConfig,
    ConfigKind,
    CortexConfig,
    EvictionConfig,
    FakeConfig,
    FakeModel,
    GatewayConfig,
    LimitsConfig,
    Listen,
    ModelProfile,
    ModelsConfig,
    NeuronConfig,
    NeuronEndpoint,
    StateConfig,
)

__all__ = [
    "AuthConfig",
    "BudgetConfig",
    "ConfigKind",
    "CortexConfig",
    "EvictionConfig",
    "FakeConfig",
    "FakeModel",
    "GatewayConfig",
    "LimitsConfig",
    "Listen",
    "ModelProfile",
    "ModelsConfig",
    "NeuronConfig",
    "NeuronEndpoint",
    "StateConfig",
    "detect_kind",
    "load_config",
    "load_cortex_config",
    "load_models_config",
    "load_neuron_config",
]
