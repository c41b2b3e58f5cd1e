"""Triton fused mixture-of-experts: a grouped matmul over (token, expert) pairs sorted by expert.

Same contract as `moe_reference.moe_experts_reference`. The pairs a step routes (tokens x top_k)
are grouped by expert and each group padded to a multiple of BLOCK_M, all on the device with no
host read, so every tile of BLOCK_M pair rows belongs to one expert (vLLM's `moe_align_block_size`
idea). One grid of (tiles, column blocks) then runs every expert at once:

1. gate/up: `h[pair] = silu(x[token] @ gate[e].T) * (x[token] @ up[e].T)`, both halves
   accumulated side by side in one program and the SwiGLU applied before the store;
2. down: `y[pair] = routing_weight[pair] * (h[pair] @ down[e].T)`, in float32;
3. `out[token] = sum over its top_k pairs of y`, a plain reduction.

The grid is sized for the worst case (every expert's group padded), and tiles past the last
group exit at once, so the launch depends only on shapes and can be captured in a CUDA graph.
"""

# Triton's @jit functions take untyped tensors/pointers; the Python launchers stay typed.
# mypy: disallow-untyped-defs=False, disallow-incomplete-defs=False

from __future__ import annotations

import torch
import triton
import triton.language as tl

from cortex.engine.kernels.checks import check_moe
from cortex.engine.kernels.tuning import MIN_DOT, interpreting

__all__ = ["align_pairs", "moe_experts_triton"]


@triton.jit
def _grouped_matmul_kernel(
    a_ptr, w_ptr, out_ptr, pairs_ptr, tile_experts_ptr, scale_ptr,
    N, K, stride_am, stride_we, stride_wn, stride_om,
    NUM_EXPERTS: tl.constexpr, TOP_K: tl.constexpr, ROWS_BY_TOKEN: tl.constexpr,
    GATED: tl.constexpr, SCALED: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    UPCAST: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    tile = tl.program_id(0)
    n_block = tl.program_id(1)
    expert = tl.load(tile_experts_ptr + tile).to(tl.int64)
    if expert < NUM_EXPERTS:  # tiles past the last expert's group hold no pairs
        m = tl.arange(0, BLOCK_M)
        pair = tl.load(pairs_ptr + tile * BLOCK_M + m)  # -1 pads a group to BLOCK_M rows
        pair_ok = pair >= 0
        if ROWS_BY_TOKEN:  # gate/up reads x by token; down reads h by pair
            row = tl.where(pair_ok, pair // TOP_K, 0).to(tl.int64)
        else:
            row = tl.where(pair_ok, pair, 0).to(tl.int64)
        n = n_block * BLOCK_N + tl.arange(0, BLOCK_N)
        n_ok = n < N
        w_base = w_ptr + expert * stride_we
        acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
        acc_up = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            k = k0 + tl.arange(0, BLOCK_K)
            k_ok = k < K
            a = tl.load(
                a_ptr + row[:, None] * stride_am + k[None, :],
                mask=pair_ok[:, None] & k_ok[None, :],
                other=0.0,
            )  # (BLOCK_M, BLOCK_K)
            w = tl.load(
                w_base + n[None, :] * stride_wn + k[:, None],
                mask=k_ok[:, None] & n_ok[None, :],
                other=0.0,
            )  # (BLOCK_K, BLOCK_N): rows n of the expert's weight, transposed
            if UPCAST:  # the interpreter cannot compute in bf16
                a = a.to(tl.float32)
                w = w.to(tl.float32)
            acc = tl.dot(a, w, acc, input_precision=PRECISION)
            if GATED:  # the up rows sit N rows below the gate rows
                w_up = tl.load(
                    w_base + (n + N)[None, :] * stride_wn + k[:, None],
                    mask=k_ok[:, None] & n_ok[None, :],
                    other=0.0,
                )
                if UPCAST:
                    w_up = w_up.to(tl.float32)
                acc_up = tl.dot(a, w_up, acc_up, input_precision=PRECISION)
        if GATED:
            acc = acc * tl.sigmoid(acc) * acc_up  # silu(gate) * up
        if SCALED:
            weight = tl.load(scale_ptr + tl.where(pair_ok, pair, 0), mask=pair_ok, other=0.0)
            acc = acc * weight.to(tl.float32)[:, None]
        tl.store(
            out_ptr + tl.where(pair_ok, pair, 0).to(tl.int64)[:, None] * stride_om + n[None, :],
            acc.to(out_ptr.dtype.element_ty),
            mask=pair_ok[:, None] & n_ok[None, :],
        )


def align_pairs(
    topk_ids: torch.Tensor, num_experts: int, block_m: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Group the (token, expert) pairs by expert, each group padded to a multiple of block_m.

    Pair `p` is token `p // top_k`'s `p % top_k`-th choice. Nothing is read back to the host.

    Returns:
        pairs: (tiles * block_m,) int32 pair ids in expert order, -1 where padding;
        tile_experts: (tiles,) int32, the expert of each tile, `num_experts` past the last group.
    """
    flat = topk_ids.reshape(-1).long()
    num_pairs = flat.numel()
    ones = torch.ones_like(flat)
    counts = torch.zeros(num_experts, dtype=torch.int64, device=flat.device)
    counts.scatter_add_(0, flat, ones)  # bincount without its host read of max()
    padded = (counts + block_m - 1) // block_m * block_m
    padded_end = torch.cumsum(padded, 0)
    order = torch.argsort(flat, stable=True)
    grouped = flat[order]
    rank = torch.arange(num_pairs, device=flat.device) - (torch.cumsum(counts, 0) - counts)[grouped]
    dest = (padded_end - padded)[grouped] + rank
    tiles = -(-(num_pairs + num_experts * (block_m - 1)) // block_m)
    pairs = torch.full((tiles * block_m,), -1, dtype=torch.int32, device=flat.device)
    pairs[dest] = order.to(torch.int32)
    starts = torch.arange(tiles, device=flat.device) * block_m
    tile_experts = torch.searchsorted(padded_end, starts, right=True).to(torch.int32)
    return pairs, tile_experts


def _tiles(num_pairs: int) -> tuple[int, int, int, int]:
    """(BLOCK_M, BLOCK_N, BLOCK_K, num_warps): small in the interpreter and for decode."""
    if interpreting():
        return MIN_DOT, 32, 32, 4
    block_m = MIN_DOT if num_pairs <= 256 else 64
    return block_m, 64, 64, 4


def moe_experts_triton(
    x: torch.Tensor,
    gate_up: torch.Tensor,
    down: torch.Tensor,
    topk_ids: torch.Tensor,
    topk_weights: torch.Tensor,
) -> torch.Tensor:
    """Triton `moe_experts`; same contract as `moe_reference.moe_experts_reference`."""
    check_moe(x, gate_up, down, topk_ids, topk_weights)
    tokens, hidden = x.shape
    num_experts, width = gate_up.shape[0], gate_up.shape[1] // 2
    top_k = topk_ids.shape[1]
    if tokens == 0:
        return torch.zeros_like(x)
    block_m, block_n, block_k, num_warps = _tiles(tokens * top_k)
    pairs, tile_experts = align_pairs(topk_ids, num_experts, block_m)
    tiles = tile_experts.shape[0]
    precision = "ieee" if x.dtype == torch.float32 else "tf32"
    upcast = interpreting()
    h = torch.empty((tokens * top_k, width), dtype=x.dtype, device=x.device)
    _grouped_matmul_kernel[(tiles, triton.cdiv(width, block_n))](
        x, gate_up, h, pairs, tile_experts, topk_weights,
        width, hidden, x.stride(0), gate_up.stride(0), gate_up.stride(1), h.stride(0),
        NUM_EXPERTS=num_experts, TOP_K=top_k, ROWS_BY_TOKEN=True, GATED=True, SCALED=False,
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, UPCAST=upcast, PRECISION=precision,
        num_warps=num_warps,
    )  # fmt: skip
    weights = topk_weights.reshape(-1).contiguous()
    y = torch.empty((tokens * top_k, hidden), dtype=torch.float32, device=x.device)
    _grouped_matmul_kernel[(tiles, triton.cdiv(hidden, block_n))](
        h, down, y, pairs, tile_experts, weights,
        hidden, width, h.stride(0), down.stride(0), down.stride(1), y.stride(0),
        NUM_EXPERTS=num_experts, TOP_K=top_k, ROWS_BY_TOKEN=False, GATED=False, SCALED=True,
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, UPCAST=upcast, PRECISION=precision,
        num_warps=num_warps,
    )  # fmt: skip
    return y.view(tokens, top_k, hidden).sum(dim=1).to(x.dtype)
