"""The torch reference of the fused mixture-of-experts kernel (`moe.py`): CPU backend and oracle."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["moe_experts_reference"]


def _linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    # One row (decode) through a matrix-vector product: on CPU it streams the weights faster.
    if x.shape[0] == 1 and x.device.type == "cpu":
        return torch.mv(weight, x[0]).unsqueeze(0)
    return F.linear(x, weight)


def moe_experts_reference(
    x: torch.Tensor,
    gate_up: torch.Tensor,
    down: torch.Tensor,
    topk_ids: torch.Tensor,
    topk_weights: torch.Tensor,
) -> torch.Tensor:
    """Each token through its chosen SwiGLU experts, outputs summed by routing weight.

    `out[t] = sum_j topk_weights[t, j] * down[e] @ (silu(g) * u)` where `e = topk_ids[t, j]`
    and `g, u` are the two halves of `gate_up[e] @ x[t]`.

    The (token, expert) pairs are sorted by expert, so each expert that any token chose runs
    one matmul over all its tokens; experts nobody chose cost nothing.

    Args:
        x: (tokens, hidden).
        gate_up: (experts, 2 * width, hidden), gate rows then up rows per expert.
        down: (experts, hidden, width).
        topk_ids: (tokens, top_k) integer expert ids.
        topk_weights: (tokens, top_k) routing weights.

    Returns:
        (tokens, hidden) in `x.dtype`.
    """
    top_k = topk_ids.shape[1]
    width = down.shape[2]
    flat_ids = topk_ids.reshape(-1)
    order = torch.argsort(flat_ids, stable=True)  # pairs grouped by expert
    pair_tokens = order // top_k
    counts = torch.bincount(flat_ids, minlength=gate_up.shape[0]).tolist()
    rows = x[pair_tokens]  # (pairs, hidden)
    outputs = torch.empty_like(rows)
    start = 0
    for expert, count in enumerate(counts):
        if count == 0:
            continue
        end = start + count
        gate_up_out = _linear(rows[start:end], gate_up[expert])  # (count, 2 width)
        hidden = F.silu(gate_up_out[:, :width]) * gate_up_out[:, width:]
        outputs[start:end] = _linear(hidden, down[expert])
        start = end
    outputs *= topk_weights.reshape(-1)[order, None].to(outputs.dtype)
    return torch.zeros_like(x).index_add_(0, pair_tokens, outputs)
