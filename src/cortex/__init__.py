"""cortex: local LLMs across a fleet of GPU hosts behind one OpenAI + Anthropic compatible API.

The public names are imported lazily: `import cortex` stays light (no torch) until the engine is
used. `cortex.Fleet` is the embeddable control plane (`cortex.embedded_fleet()` runs
one with its neuron in this process), the `*_to_*` functions and stream
translators are the pure dialect translation, and `cortex.Engine` runs a model in-process.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "AnthropicStreamTranslator",
    "ConfigError",
    "CortexConfig",
    "CortexError",
    "Engine",
    "Fleet",
    "ModelsConfig",
    "NeuronConfig",
    "OpenAIStreamTranslator",
    "ResponsesStreamTranslator",
    "SSEDecoder",
    "SamplingParams",
    "Tokenizer",
    "__version__",
    "anthropic_request_to_openai",
    "anthropic_response_to_openai",
    "default_model_dir",
    "embedded_fleet",
    "encode_sse",
    "load_cortex_config",
    "load_model",
    "load_models_config",
    "load_neuron_config",
    "openai_request_to_anthropic",
    "openai_response_to_anthropic",
    "openai_response_to_responses",
    "responses_request_to_openai",
]

_LAZY = {
    "ConfigError": "cortex.errors",
    "CortexError": "cortex.errors",
    "CortexConfig": "cortex.config",
    "ModelsConfig": "cortex.config",
    "NeuronConfig": "cortex.config",
    "load_cortex_config": "cortex.config",
    "load_models_config": "cortex.config",
    "load_neuron_config": "cortex.config",
    "Fleet": "cortex.fleet",
    "embedded_fleet": "cortex.embedded",
    "Engine": "cortex.engine",
    "SamplingParams": "cortex.engine",
    "Tokenizer": "cortex.engine",
    "default_model_dir": "cortex.engine",
    "load_model": "cortex.engine",
    "AnthropicStreamTranslator": "cortex.translate",
    "OpenAIStreamTranslator": "cortex.translate",
    "ResponsesStreamTranslator": "cortex.translate",
    "SSEDecoder": "cortex.translate",
    "anthropic_request_to_openai": "cortex.translate",
    "anthropic_response_to_openai": "cortex.translate",
    "encode_sse": "cortex.translate",
    "openai_request_to_anthropic": "cortex.translate",
    "openai_response_to_anthropic": "cortex.translate",
    "openai_response_to_responses": "cortex.translate",
    "responses_request_to_openai": "cortex.translate",
}

if TYPE_CHECKING:
    from cortex.config import (
        CortexConfig,
        ModelsConfig,
        NeuronConfig,
        load_cortex_config,
        load_models_config,
        load_neuron_config,
    )
    from cortex.embedded import embedded_fleet
    from cortex.engine import Engine, SamplingParams, Tokenizer, default_model_dir, load_model
    from cortex.errors import ConfigError, CortexError
    from cortex.fleet import Fleet
    from cortex.translate import (
        AnthropicStreamTranslator,
        OpenAIStreamTranslator,
        ResponsesStreamTranslator,
        SSEDecoder,
        anthropic_request_to_openai,
        anthropic_response_to_openai,
        encode_sse,
        openai_request_to_anthropic,
        openai_response_to_anthropic,
        openai_response_to_responses,
        responses_request_to_openai,
    )


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'cortex' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
