"""Fixtures for the engine tests: the default model, imported once per machine and cached."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def default_model_dir() -> Path:
    """SmolLM2-135M-Instruct as a float32 model folder (imported from its GGUF on first use)."""
    from cortex.engine.gguf import default_model_dir

    return default_model_dir(progress=False)
