"""Qwen3: the Llama block with each query and key head RMS-normalised before the rotation."""

from __future__ import annotations

import torch

from cortex.engine.models.config import LlamaConfig
from cortex.engine.models.llama import Attention, Llama, RMSNorm, TransformerBlock
from cortex.engine.models.rope import apply_rotary

__all__ = ["Qwen3", "Qwen3Attention"]


class Qwen3Attention(Attention):
    """Llama's attention plus `q_norm` and `k_norm`: one RMSNorm of width head_dim each, shared
    by all heads, applied to every head between the projection and the rotation."""

    def __init__(
        self, config: LlamaConfig, layer: int, *, device: torch.device | str, dtype: torch.dtype
    ) -> None:
        super().__init__(config, layer, device=device, dtype=dtype)
        eps = config.rms_norm_eps
        self.q_norm = RMSNorm(config.head_dim, eps, device=device, dtype=dtype)
        self.k_norm = RMSNorm(config.head_dim, eps, device=device, dtype=dtype)

    def fused_qk_norms(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """See `Attention.fused_qk_norms`: `q_norm` and `k_norm`'s gains."""
        return self.q_norm.weight, self.k_norm.weight

    def rotate_qk(
        self, qk: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(tokens, (heads + kv_heads) * head_dim) -> normalised, rotated q and k heads."""
        tokens, q_width = qk.shape[0], self.num_heads * self.head_dim
        q = self.q_norm(qk[:, :q_width].view(tokens, self.num_heads, self.head_dim))
        k = self.k_norm(qk[:, q_width:].view(tokens, self.num_kv_heads, self.head_dim))
        return apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)

    def weight_slots(self, prefix: str) -> dict[str, torch.Tensor]:
        """Llama's q/k/v/o names plus `q_norm.weight` and `k_norm.weight`."""
        return {
            **super().weight_slots(prefix),
            f"{prefix}q_norm.weight": self.q_norm.weight,
            f"{prefix}k_norm.weight": self.k_norm.weight,
        }


class Qwen3(Llama):
    """A Qwen3 decoder (`model_type` `qwen3`): Llama with q/k norms and no attention bias."""

    def make_block(
        self, config: LlamaConfig, layer: int, *, device: torch.device | str, dtype: torch.dtype
    ) -> TransformerBlock:
        """A Llama block whose attention is `Qwen3Attention`."""
        attn = Qwen3Attention(config, layer, device=device, dtype=dtype)
        return TransformerBlock(config, layer, device=device, dtype=dtype, attn=attn)
