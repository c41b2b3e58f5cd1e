"""Qwen3-MoE: Qwen3 whose MLPs are sparse mixtures of SwiGLU experts, each token routed top-k.

The router is a linear map to one logit per expert; a token goes to the `top_k` experts of
highest softmax probability (renormalised to sum to one when `norm_topk_prob`), and its output
is the weighted sum of theirs. Expert weights are stacked, one tensor per projection across
experts, so a step runs one grouped matmul (`kernels.moe_experts`) instead of one per expert.
"""

from __future__ import annotations

import torch
from torch import nn

from cortex.engine import kernels
from cortex.engine.models.config import LlamaConfig
from cortex.engine.models.llama import FeedForward, TransformerBlock, linear
from cortex.engine.models.qwen3 import Qwen3, Qwen3Attention

__all__ = ["Qwen3Moe", "SparseMoE", "route"]


def route(
    router_logits: torch.Tensor, top_k: int, *, normalize: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each token's experts and their weights, as Qwen3-MoE chooses them.

    Args:
        router_logits: (tokens, num_experts).
        top_k: experts per token.
        normalize: renormalise the chosen probabilities to sum to one (`norm_topk_prob`).

    Returns:
        weights (tokens, top_k) in the logits' dtype, and expert ids (tokens, top_k) int64.
    """
    probs = torch.softmax(router_logits, dim=-1, dtype=torch.float32)
    weights, ids = torch.topk(probs, top_k, dim=-1)
    if normalize:
        weights = weights / weights.sum(dim=-1, keepdim=True)
    return weights.to(router_logits.dtype), ids


class SparseMoE(FeedForward):
    """Router plus `num_experts` SwiGLU experts; replaces the MLP of a sparse block."""

    def __init__(
        self, config: LlamaConfig, *, device: torch.device | str, dtype: torch.dtype
    ) -> None:
        super().__init__()
        experts, hidden, width = (
            config.num_experts,
            config.hidden_size,
            config.moe_intermediate_size,
        )
        self.top_k = config.num_experts_per_tok
        self.normalize = config.norm_topk_prob
        self.router_weight = _weight((experts, hidden), device, dtype)
        # Per expert: rows of gate then up (like MLP.gate_up_weight), and down.
        self.gate_up_weight = _weight((experts, 2 * width, hidden), device, dtype)
        self.down_weight = _weight((experts, hidden, width), device, dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(tokens, hidden) -> (tokens, hidden)."""
        weights, ids = route(
            linear(x, self.router_weight), self.top_k, normalize=self.normalize
        )  # (tokens, top_k) each
        return kernels.moe_experts(x, self.gate_up_weight, self.down_weight, ids, weights)

    def weight_slots(self, prefix: str) -> dict[str, torch.Tensor]:
        """Hub names (`gate.weight`, `experts.E.{gate,up,down}_proj.weight`) -> views."""
        width = self.down_weight.shape[2]
        slots: dict[str, torch.Tensor] = {f"{prefix}gate.weight": self.router_weight}
        for e in range(self.gate_up_weight.shape[0]):
            slots[f"{prefix}experts.{e}.gate_proj.weight"] = self.gate_up_weight[e, :width]
            slots[f"{prefix}experts.{e}.up_proj.weight"] = self.gate_up_weight[e, width:]
            slots[f"{prefix}experts.{e}.down_proj.weight"] = self.down_weight[e]
        return slots


def _weight(shape: tuple[int, ...], device: torch.device | str, dtype: torch.dtype) -> nn.Parameter:
    return nn.Parameter(torch.empty(shape, device=device, dtype=dtype), requires_grad=False)


class Qwen3Moe(Qwen3):
    """A Qwen3-MoE decoder (`model_type` `qwen3_moe`).

    Blocks chosen by `LlamaConfig.is_sparse` (`decoder_sparse_step`, `mlp_only_layers`) get a
    `SparseMoE`; the others keep a dense SwiGLU MLP of width `intermediate_size`.
    """

    def make_block(
        self, config: LlamaConfig, layer: int, *, device: torch.device | str, dtype: torch.dtype
    ) -> TransformerBlock:
        """A Qwen3 block, with a `SparseMoE` MLP where the config places one."""
        attn = Qwen3Attention(config, layer, device=device, dtype=dtype)
        mlp = SparseMoE(config, device=device, dtype=dtype) if config.is_sparse(layer) else None
        return TransformerBlock(config, layer, device=device, dtype=dtype, attn=attn, mlp=mlp)
