"""The Triton KV-cache store against its torch reference."""

from __future__ import annotations

import random

import pytest
import torch

from cortex.engine import kernels
from cortex.engine.kernels import store_kv_reference


@pytest.mark.parametrize(
    ("tokens", "kv_heads", "head_dim", "block_size", "dtype"),
    [
        (1, 1, 64, 16, torch.float32),
        (77, 3, 64, 16, torch.bfloat16),
        (300, 2, 128, 32, torch.float16),
        (45, 8, 128, 16, torch.float32),
    ],
)
def test_store_kv_matches_reference(
    tokens: int,
    kv_heads: int,
    head_dim: int,
    block_size: int,
    dtype: torch.dtype,
    triton_kernels: None,
    device: torch.device,
) -> None:
    rng = random.Random(tokens)
    gen = torch.Generator().manual_seed(tokens)
    num_blocks = tokens // block_size + 4
    slots = rng.sample(range(num_blocks * block_size), tokens)
    for i in rng.sample(range(tokens), tokens // 5):
        slots[i] = -1  # padding tokens: never written
    slot_mapping = torch.tensor(slots, dtype=torch.int64, device=device)
    # key and value as views of a fused projection output: strided rows, contiguous heads.
    fused = torch.randn(tokens, 3 * kv_heads * head_dim, generator=gen).to(dtype).to(device)
    key = fused[:, : kv_heads * head_dim].view(tokens, kv_heads, head_dim)
    value = fused[:, kv_heads * head_dim : 2 * kv_heads * head_dim].view(tokens, kv_heads, head_dim)
    shape = (num_blocks, block_size, kv_heads, head_dim)
    # Poisoned caches: untouched slots must stay NaN, written ones must match exactly.
    k_cache = torch.full(shape, float("nan"), dtype=dtype, device=device)
    v_cache = torch.full(shape, float("nan"), dtype=dtype, device=device)
    k_ref, v_ref = k_cache.clone(), v_cache.clone()
    kernels.store_kv(key, value, k_cache, v_cache, slot_mapping)
    store_kv_reference(key, value, k_ref, v_ref, slot_mapping)
    assert torch.equal(k_cache.isnan(), k_ref.isnan())
    assert torch.equal(k_cache.nan_to_num(), k_ref.nan_to_num())
    assert torch.equal(v_cache.nan_to_num(), v_ref.nan_to_num())
    written = int((slot_mapping >= 0).sum()) * kv_heads * head_dim
    assert int((~k_cache.isnan()).sum()) == written
    first = next(i for i, s in enumerate(slots) if s >= 0)
    block, row = divmod(slots[first], block_size)
    assert torch.equal(k_cache[block, row], key[first])


def test_store_kv_with_no_tokens_is_a_no_op(triton_kernels: None, device: torch.device) -> None:
    cache = torch.zeros(2, 16, 1, 64, device=device)
    empty = torch.empty(0, 1, 64, device=device)
    slots = torch.empty(0, dtype=torch.int64, device=device)
    kernels.store_kv(empty, empty, cache, cache.clone(), slots)
    assert cache.abs().max() == 0
