"""Triton kernel writing new tokens' keys and values into the paged KV cache (slot -1 = skip).

One program per token copies its (kv_heads, head_dim) key and value rows to
`cache.view(-1, kv_heads, head_dim)[slot]`. The torch twin is `reference.store_kv_reference`.
"""

# Triton's @jit functions take untyped tensors/pointers; the Python launchers stay typed.
# mypy: disallow-untyped-defs=False, disallow-incomplete-defs=False

from __future__ import annotations

import torch
import triton
import triton.language as tl

from cortex.engine.kernels.checks import check_store_kv
from cortex.engine.kernels.tuning import next_power_of_2

__all__ = ["store_kv_triton"]


@triton.jit
def _store_kv_kernel(
    key_ptr,
    value_ptr,
    k_cache_ptr,
    v_cache_ptr,
    slot_ptr,
    stride_kt,
    stride_kh,
    stride_vt,
    stride_vh,
    NUM_KV_HEADS: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    token = tl.program_id(0).to(tl.int64)
    slot = tl.load(slot_ptr + token).to(tl.int64)
    h = tl.arange(0, BLOCK_H)[:, None]
    d = tl.arange(0, BLOCK_D)[None, :]
    # The slot test is broadcast by hand: the interpreter rejects a scalar mask operand.
    skip = tl.zeros([BLOCK_H, BLOCK_D], tl.int64) + slot < 0
    mask = (h < NUM_KV_HEADS) & (d < HEAD_DIM) & ~skip
    k = tl.load(key_ptr + token * stride_kt + h * stride_kh + d, mask=mask)
    v = tl.load(value_ptr + token * stride_vt + h * stride_vh + d, mask=mask)
    # The cache is contiguous, so a slot is NUM_KV_HEADS * HEAD_DIM elements.
    dst = slot * (NUM_KV_HEADS * HEAD_DIM) + h * HEAD_DIM + d
    tl.store(k_cache_ptr + dst, k, mask=mask)
    tl.store(v_cache_ptr + dst, v, mask=mask)


def store_kv_triton(
    key: torch.Tensor,
    value: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
) -> None:
    """Triton `store_kv`: same arguments and effect as `reference.store_kv_reference`."""
    check_store_kv(key, value, k_cache, v_cache, slot_mapping)
    num_tokens, num_kv_heads, head_dim = key.shape
    if num_tokens == 0:
        return
    _store_kv_kernel[(num_tokens,)](
        key,
        value,
        k_cache,
        v_cache,
        slot_mapping,
        key.stride(0),
        key.stride(1),
        value.stride(0),
        value.stride(1),
        NUM_KV_HEADS=num_kv_heads,
        HEAD_DIM=head_dim,
        BLOCK_H=next_power_of_2(num_kv_heads),
        BLOCK_D=next_power_of_2(head_dim),
    )
