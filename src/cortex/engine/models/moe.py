"""Qwen3-MoE: Qwen3 whose MLPs are sparse mixtures of SwiGLU experts, each token routed top-k.

The router is a linear map to one logit per expert; a token goes to the `top_k` experts of
highest softmax probability (renormalised to sum to one when `norm_topk_prob`), and its output
is the weighted sum of theirs. Expert weights are stacked, one tensor per projection across
experts, so a step runs one grouped matmul (`kernels.moe_experts`) instead of one per expert.

Under weight-only quantization (`cortex.engine.quant`, int8/int4) each expert's two matrices
become `QuantizedWeight`s instead (`quantize_experts`), run expert by expert over the tokens
routed to it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from cortex.engine import kernels
from cortex.engine.models.config import LlamaConfig
from cortex.engine.models.llama import FeedForward, TransformerBlock, linear
from cortex.engine.models.qwen3 import Qwen3, Qwen3Attention
from cortex.engine.quant import QuantizedWeight, QuantSpec

__all__ = ["Qwen3Moe", "SparseMoE", "quantize_experts", "route"]


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
        self.num_experts, self.hidden, self.width = experts, hidden, width
        self.router_weight = _weight((experts, hidden), device, dtype)
        # Per expert: rows of gate then up (like MLP.gate_up_weight), and down.
        self.gate_up_weight: nn.Parameter | None = _weight(
            (experts, 2 * width, hidden), device, dtype
        )
        self.down_weight: nn.Parameter | None = _weight((experts, hidden, width), device, dtype)
        # Set by `quantize_experts` instead of the two stacks above.
        self.quantized_gate_up: nn.ModuleList | None = None
        self.quantized_down: nn.ModuleList | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(tokens, hidden) -> (tokens, hidden)."""
        weights, ids = route(
            linear(x, self.router_weight), self.top_k, normalize=self.normalize
        )  # (tokens, top_k) each
        return self.run_experts(x, ids, weights)

    def run_experts(
        self, x: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor
    ) -> torch.Tensor:
        """The experts' weighted sum for tokens already routed (see `kernels.moe_experts`).

        Args:
            x: (tokens, hidden).
            ids: (tokens, top_k) expert ids.
            weights: (tokens, top_k) routing weights.
        """
        if self.gate_up_weight is not None and self.down_weight is not None:
            return kernels.moe_experts(x, self.gate_up_weight, self.down_weight, ids, weights)
        # Quantized: each chosen expert runs once over its tokens (pairs sorted by expert, as
        # the torch reference does), through its QuantizedWeights' kernels.
        assert self.quantized_gate_up is not None and self.quantized_down is not None
        flat = ids.reshape(-1)
        order = torch.argsort(flat, stable=True)
        pair_tokens = order // self.top_k
        counts = torch.bincount(flat, minlength=self.num_experts).tolist()
        rows = x[pair_tokens]
        outputs = torch.empty_like(rows)
        start = 0
        for expert, count in enumerate(counts):
            if count:
                end = start + count
                gate, up = self.quantized_gate_up[expert](rows[start:end]).chunk(2, dim=-1)
                outputs[start:end] = self.quantized_down[expert](F.silu(gate) * up)
                start = end
        outputs *= weights.reshape(-1)[order, None].to(outputs.dtype)
        return torch.zeros_like(x).index_add_(0, pair_tokens, outputs)

    def quantize(self, spec: QuantSpec) -> None:
        """Hold every expert's matrices as empty `QuantizedWeight`s of layout `spec` (before
        loading: the float stacks were never filled, so dropping them loses nothing)."""
        device, dtype = self.router_weight.device, self.router_weight.dtype

        def empty(rows: int, cols: int, name: str) -> QuantizedWeight:
            return QuantizedWeight(rows, cols, spec, device=device, dtype=dtype, name=name)

        experts = range(self.num_experts)
        self.quantized_gate_up = nn.ModuleList(
            empty(2 * self.width, self.hidden, f"experts.{e}.gate_up") for e in experts
        )
        self.quantized_down = nn.ModuleList(
            empty(self.hidden, self.width, f"experts.{e}.down") for e in experts
        )
        self.gate_up_weight = self.down_weight = None

    def weight_slots(self, prefix: str) -> dict[str, torch.Tensor]:
        """Hub names (`gate.weight`, `experts.E.{gate,up,down}_proj.weight`) -> views."""
        width = self.width
        slots: dict[str, torch.Tensor] = {f"{prefix}gate.weight": self.router_weight}
        for e in range(self.num_experts):
            names = [f"{prefix}experts.{e}.{kind}_proj.weight" for kind in ("gate", "up", "down")]
            views: list[Any]  # float views, or `QuantRows` of quantized experts
            if self.gate_up_weight is not None and self.down_weight is not None:
                stack = self.gate_up_weight
                views = [stack[e, :width], stack[e, width:], self.down_weight[e]]
            else:
                assert self.quantized_gate_up is not None and self.quantized_down is not None
                gate_up = cast(QuantizedWeight, self.quantized_gate_up[e])
                down = cast(QuantizedWeight, self.quantized_down[e])
                views = [gate_up[:width], gate_up[width:], down.rows()]
            slots.update(zip(names, views, strict=True))
        return slots


def _weight(shape: tuple[int, ...], device: torch.device | str, dtype: torch.dtype) -> nn.Parameter:
    return nn.Parameter(torch.empty(shape, device=device, dtype=dtype), requires_grad=False)


def quantize_experts(model: nn.Module, specs: Mapping[str, QuantSpec]) -> dict[str, QuantSpec]:
    """Quantize the experts of every `SparseMoE` in `model` whose checkpoint names `specs`
    gives a layout (int8 where its tensors ask for different ones); call before loading.

    Routers stay in float (as vLLM keeps them): a rounded router logit can send a token to
    other experts, a discontinuity that weight rounding elsewhere does not have.

    Args:
        model: a `Qwen3Moe` (other models have no experts: nothing happens).
        specs: checkpoint name -> layout, as `cortex.engine.quant.quant_specs` gives them.

    Returns:
        `specs` without the routers, for `cortex.engine.quant.swap_in_quantized`.
    """
    kept = dict(specs)
    for i, block in enumerate(getattr(model, "layers", ())):
        mlp = getattr(block, "mlp", None)
        if not isinstance(mlp, SparseMoE):
            continue
        prefix = f"model.layers.{i}.mlp."
        kept.pop(f"{prefix}gate.weight", None)
        names = [n for n in mlp.weight_slots(prefix) if ".experts." in n]
        layouts = {specs[n] for n in names if n in specs}
        if layouts and len(layouts) == len({specs.get(n) for n in names}):
            mlp.quantize(layouts.pop() if len(layouts) == 1 else QuantSpec(8))
        # else: some of this layer's expert tensors stay float, so all of them do
    return kept


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
