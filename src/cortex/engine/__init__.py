"""The inference engine: our safetensors loader, GGUF import, tokenizer, Llama models, the Engine.

Names are imported lazily, so `import cortex.engine` stays light until one is used.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "Engine",
    "EngineStats",
    "SafetensorsError",
    "SamplingParams",
    "TokenEvent",
    "Tokenizer",
    "Usage",
    "default_model_dir",
    "import_gguf",
    "load_model",
]

_LAZY = {
    "Engine": "cortex.engine.engine",
    "EngineStats": "cortex.engine.engine",
    "TokenEvent": "cortex.engine.engine",
    "Usage": "cortex.engine.engine",
    "SamplingParams": "cortex.engine.sampling",
    "SafetensorsError": "cortex.engine.safetensors",
    "Tokenizer": "cortex.engine.tokenizer",
    "default_model_dir": "cortex.engine.gguf",
    "import_gguf": "cortex.engine.gguf",
    "load_model": "cortex.engine.models",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'cortex.engine' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
