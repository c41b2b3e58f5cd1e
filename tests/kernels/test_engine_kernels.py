"""The Engine on the default model gives the same tokens with the Triton kernels as with torch."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import torch

from cortex.engine import Engine, SamplingParams


@pytest.fixture(scope="module")
def model_dir() -> Path:
    """SmolLM2-135M-Instruct as float32 (imported from its GGUF once per machine)."""
    from cortex.engine.gguf import default_model_dir

    return default_model_dir(progress=False)


async def _generate(model_dir: Path, prompts: list[list[int]]) -> list[list[int]]:
    # On CUDA the engine captures its decode steps in CUDA graphs, kernels included.
    device = "cuda" if torch.cuda.is_available() else "cpu"
    engine = Engine.from_pretrained(
        model_dir, device=device, dtype="float32", kv_cache_mb=8, max_num_seqs=2
    )
    try:
        # A greedy and a seeded request share each step, so the kernels see batches of two.
        params = [
            SamplingParams(temperature=0.0, max_tokens=3, ignore_eos=True),
            SamplingParams(temperature=0.9, seed=11, max_tokens=3, ignore_eos=True),
        ]

        async def run(prompt: list[int], p: SamplingParams) -> list[int]:
            stream = engine.generate(prompt, p)
            return [e.token_id async for e in stream if e.token_id is not None]

        return list(await asyncio.gather(*map(run, prompts, params)))
    finally:
        engine.close()


async def test_triton_kernels_give_the_torch_tokens(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tiny prompts and three tokens: the interpreter runs every kernel program in Python.
    prompts = [[1, 504, 3575, 282, 4649, 314], [1, 504, 3575, 282]]
    monkeypatch.setenv("CORTEX_KERNELS", "torch")
    expected = await _generate(model_dir, prompts)
    monkeypatch.setenv("CORTEX_KERNELS", "triton")
    got = await _generate(model_dir, prompts)
    assert got == expected
    assert all(len(tokens) == 3 for tokens in got)
