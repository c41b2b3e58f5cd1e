"""Model implementations and `load_model`, which builds one from a Hugging Face directory."""

from __future__ import annotations

from pathlib import Path

import torch

from cortex.engine.kernels import cpu_decode
from cortex.engine.models.config import SUPPORTED_MODEL_TYPES, LlamaConfig
from cortex.engine.models.llama import Llama
from cortex.engine.models.moe import Qwen3Moe, quantize_experts
from cortex.engine.models.qwen3 import Qwen3
from cortex.engine.quant import (
    gather_quantized,
    parse_quant,
    prepare_model,
    quant_specs,
    swap_in_quantized,
)
from cortex.engine.safetensors import load_checkpoint
from cortex.errors import CortexError

__all__ = [
    "SUPPORTED_MODEL_TYPES",
    "Llama",
    "LlamaConfig",
    "Qwen3",
    "Qwen3Moe",
    "load_model",
    "resolve_dtype",
]

# `model_type` -> the class that runs it; the rest of the Llama family is `Llama` itself.
_MODEL_CLASSES: dict[str, type[Llama]] = {"qwen3": Qwen3, "qwen3_moe": Qwen3Moe}

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
}


def resolve_dtype(dtype: torch.dtype | str) -> torch.dtype:
    """`torch.bfloat16` from `torch.bfloat16`, `"bfloat16"` or `"bf16"` (float32/16 likewise).

    Raises:
        CortexError: not one of float32, bfloat16, float16.
    """
    if isinstance(dtype, torch.dtype):
        resolved: torch.dtype | None = dtype
    else:
        resolved = _DTYPES.get(dtype.lower().removeprefix("torch."))
    if resolved not in (torch.float32, torch.bfloat16, torch.float16):
        raise CortexError(f"dtype {dtype!r} is not supported; use float32, bfloat16 or float16")
    assert resolved is not None
    return resolved


def load_model(
    model_dir: str | Path,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | str = torch.float32,
    quant: str | None = None,
) -> Llama:
    """Build a Llama-family model (dense or MoE) from `config.json` and its safetensors weights.

    Args:
        model_dir: a Hugging Face model directory (`config.json`, `model.safetensors` or shards).
        device: `cpu`, `cuda`, `cuda:1`...
        dtype: float32, bfloat16 or float16 (a `torch.dtype` or its name).
        quant: how to hold the weights (`cortex.engine.quant`): `none` (float, `dtype`), `bf16`
            (bfloat16 weights and activations), `int8`, `int4` (`int4-g32`/`-g64`/`-g128`);
            the weight-only kinds compute in `dtype`. None keeps the checkpoint as stored
            (a quantized import stays quantized).

    Returns:
        The model, in inference mode, weights on `device`.

    Raises:
        CortexError: unsupported architecture or dtype, or a checkpoint that does not fit.
        SafetensorsError: a malformed weights file.
    """
    config = LlamaConfig.from_dir(model_dir)
    model_class = _MODEL_CLASSES.get(config.model_type, Llama)
    mode, spec = parse_quant(quant) if quant is not None else (None, None)
    if mode == "bf16":
        dtype = torch.bfloat16
    model = model_class(config, device=device, dtype=resolve_dtype(dtype))
    entries = list(gather_quantized(load_checkpoint(model_dir)))
    # MoE experts take their own quantized layout (and routers stay float) before the rest.
    specs = quantize_experts(model, quant_specs(entries, mode, spec, keep_group=quant == "int4"))
    swap_in_quantized(model, model._weight_slots(), specs)
    model.load_weights(entries)
    prepare_model(model)
    if model.device.type == "cpu":
        # Build the fused decode step's library now (once per machine, ~15 s), not in the
        # first request's first decode step.
        cpu_decode.load_library()
    return model.eval()
