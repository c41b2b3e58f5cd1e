"""Rotary position embeddings: frequencies (Llama 3 and linear scaling), tables, `apply_rotary`."""

from __future__ import annotations

import math
from typing import Any

import torch

__all__ = ["apply_rotary", "inverse_frequencies", "rotary_table"]


def inverse_frequencies(
    head_dim: int, theta: float, scaling: dict[str, Any] | None = None
) -> torch.Tensor:
    """The rotary inverse frequencies `theta ** (-2i / head_dim)`, scaled as the config says.

    Computed in float32 exactly as Hugging Face does, so tables agree bit for bit.

    Args:
        head_dim: width of one attention head (the table covers `head_dim // 2` frequencies).
        theta: the rope base.
        scaling: None, or a dict with `rope_type` `linear` (`factor`) or `llama3` (`factor`,
            `low_freq_factor`, `high_freq_factor`, `original_max_position_embeddings`).

    Returns:
        (head_dim // 2,) float32.
    """
    exponents = torch.arange(0, head_dim, 2, dtype=torch.int64).to(torch.float) / head_dim
    inv_freq = 1.0 / (theta**exponents)
    if scaling is None:
        return inv_freq
    rope_type = scaling["rope_type"]
    factor = float(scaling["factor"])
    if rope_type == "linear":
        return inv_freq / factor
    if rope_type != "llama3":
        raise ValueError(f"unsupported rope_type {rope_type!r}")
    # Llama 3.1: long wavelengths are stretched by `factor`, short ones kept, the band between
    # interpolated smoothly.
    low_freq_factor = float(scaling["low_freq_factor"])
    high_freq_factor = float(scaling["high_freq_factor"])
    old_context = float(scaling["original_max_position_embeddings"])
    low_freq_wavelen = old_context / low_freq_factor
    high_freq_wavelen = old_context / high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_context / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    is_medium = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
    return torch.where(is_medium, smoothed, scaled)


def rotary_table(
    inv_freq: torch.Tensor, num_positions: int, dtype: torch.dtype, device: torch.device | str
) -> torch.Tensor:
    """cos and sin for every position, computed in float32 and then cast to `dtype`.

    Returns:
        (num_positions, 2, head_dim // 2): `[:, 0]` is cos, `[:, 1]` is sin.
    """
    positions = torch.arange(num_positions, dtype=torch.int64).float()
    freqs = positions[:, None] * inv_freq[None, :]  # (positions, head_dim // 2)
    table = torch.stack((freqs.cos(), freqs.sin()), dim=1)
    return table.to(device=device, dtype=dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each head's two halves by the position's angles (the "rotate half" layout).

    Args:
        x: (tokens, heads, head_dim).
        cos: (tokens, head_dim // 2).
        sin: (tokens, head_dim // 2).

    Returns:
        (tokens, heads, head_dim), the same dtype as `x`.
    """
    x1, x2 = x.chunk(2, dim=-1)  # (tokens, heads, head_dim // 2) each
    cos = cos[:, None, :]
    sin = sin[:, None, :]
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)
