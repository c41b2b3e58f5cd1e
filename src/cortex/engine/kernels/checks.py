"""Shape, dtype, device and stride checks every kernel entry point runs before launching."""

from __future__ import annotations

import torch

from cortex.engine.kernels.metadata import AttentionMetadata

__all__ = ["check_attention", "check_cache", "check_moe", "check_sample", "check_store_kv"]

_ATTENTION_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_INDEX_DTYPES = (torch.int32, torch.int64)


def _fail(what: str) -> None:
    raise ValueError(what)


def _same_device(name: str, tensor: torch.Tensor, device: torch.device) -> None:
    if tensor.device != device:
        _fail(f"{name} is on {tensor.device}, expected {device}")


def check_cache(k_cache: torch.Tensor, v_cache: torch.Tensor) -> None:
    """Check a layer's paged K/V cache: two equal, contiguous (blocks, block_size, heads, dim)."""
    if k_cache.dim() != 4:
        _fail(f"k_cache must be (num_blocks, block_size, kv_heads, head_dim), got {k_cache.shape}")
    if v_cache.shape != k_cache.shape or v_cache.dtype != k_cache.dtype:
        _fail(
            f"v_cache {tuple(v_cache.shape)} {v_cache.dtype} differs from "
            f"k_cache {tuple(k_cache.shape)} {k_cache.dtype}"
        )
    if k_cache.dtype not in _ATTENTION_DTYPES:
        _fail(f"cache dtype {k_cache.dtype} is not one of {_ATTENTION_DTYPES}")
    if not (k_cache.is_contiguous() and v_cache.is_contiguous()):
        _fail("k_cache and v_cache must be contiguous")
    _same_device("v_cache", v_cache, k_cache.device)


def check_store_kv(
    key: torch.Tensor,
    value: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
) -> None:
    """Check `store_kv` arguments; raises ValueError naming the first problem found."""
    check_cache(k_cache, v_cache)
    expected = (key.shape[0], *k_cache.shape[2:]) if key.dim() == 3 else None
    for name, tensor in (("key", key), ("value", value)):
        if tensor.dim() != 3 or tuple(tensor.shape) != expected:
            _fail(f"{name} must be (tokens, kv_heads, head_dim) = {expected}, got {tensor.shape}")
        if tensor.dtype != k_cache.dtype:
            _fail(f"{name} dtype {tensor.dtype} differs from the cache's {k_cache.dtype}")
        if tensor.stride(-1) != 1:
            _fail(f"{name} must have a contiguous last dimension, strides {tensor.stride()}")
        _same_device(name, tensor, k_cache.device)
    if slot_mapping.shape != (key.shape[0],) or slot_mapping.dtype not in _INDEX_DTYPES:
        _fail(
            f"slot_mapping must be ({key.shape[0]},) int32/int64, "
            f"got {tuple(slot_mapping.shape)} {slot_mapping.dtype}"
        )
    _same_device("slot_mapping", slot_mapping, k_cache.device)


def check_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    meta: AttentionMetadata,
    *,
    decode: bool,
) -> None:
    """Check `prefill_attention` / `decode_attention` arguments; raises ValueError."""
    check_cache(k_cache, v_cache)
    num_kv_heads, head_dim = k_cache.shape[2], k_cache.shape[3]
    if q.dim() != 3 or q.shape[2] != head_dim:
        _fail(f"q must be (tokens, heads, {head_dim}), got {tuple(q.shape)}")
    if q.shape[1] % num_kv_heads != 0:
        _fail(f"q heads {q.shape[1]} are not a multiple of the cache's kv heads {num_kv_heads}")
    if q.dtype != k_cache.dtype:
        _fail(f"q dtype {q.dtype} differs from the cache's {k_cache.dtype}")
    if q.stride(-1) != 1:
        _fail(f"q must have a contiguous last dimension, strides {q.stride()}")
    _same_device("q", q, k_cache.device)
    num_seqs = meta.seq_lens.shape[0]
    for name, tensor, shape in (
        ("meta.seq_lens", meta.seq_lens, (num_seqs,)),
        ("meta.cu_seqlens_q", meta.cu_seqlens_q, (num_seqs + 1,)),
    ):
        if tensor.shape != shape or tensor.dtype not in _INDEX_DTYPES:
            _fail(f"{name} must be {shape} int32/int64, got {tuple(tensor.shape)} {tensor.dtype}")
        _same_device(name, tensor, k_cache.device)
    tables = meta.block_tables
    if tables.dim() != 2 or tables.shape[0] != num_seqs or tables.dtype not in _INDEX_DTYPES:
        _fail(
            f"meta.block_tables must be ({num_seqs}, max_blocks) int32/int64, "
            f"got {tuple(tables.shape)} {tables.dtype}"
        )
    if tables.stride(-1) != 1:
        _fail(f"meta.block_tables must have a contiguous last dimension, {tables.stride()}")
    _same_device("meta.block_tables", tables, k_cache.device)
    if decode and q.shape[0] != num_seqs:
        _fail(f"decode q has {q.shape[0]} rows for {num_seqs} sequences")


def check_sample(
    logits: torch.Tensor,
    temperature: torch.Tensor,
    top_k: torch.Tensor,
    top_p: torch.Tensor,
    min_p: torch.Tensor,
    seeds: torch.Tensor,
    steps: torch.Tensor,
) -> None:
    """Check `sample` arguments: (rows, vocab) float logits and (rows,) parameters."""
    if logits.dim() != 2 or not logits.is_floating_point():
        _fail(f"logits must be (rows, vocab) floating point, got {tuple(logits.shape)}")
    if logits.stride(-1) != 1:
        _fail(f"logits must have a contiguous last dimension, strides {logits.stride()}")
    rows = logits.shape[0]
    for name, tensor, floating in (
        ("temperature", temperature, True),
        ("top_k", top_k, False),
        ("top_p", top_p, True),
        ("min_p", min_p, True),
        ("seeds", seeds, False),
        ("steps", steps, False),
    ):
        if tensor.shape != (rows,):
            _fail(f"{name} must be ({rows},), got {tuple(tensor.shape)}")
        if tensor.is_floating_point() != floating:
            _fail(f"{name} must be {'floating point' if floating else 'integer'}, {tensor.dtype}")
        _same_device(name, tensor, logits.device)


def check_moe(
    x: torch.Tensor,
    gate_up: torch.Tensor,
    down: torch.Tensor,
    topk_ids: torch.Tensor,
    topk_weights: torch.Tensor,
) -> None:
    """Check `moe_experts` arguments; raises ValueError naming the first problem found."""
    if x.dim() != 2 or x.stride(-1) != 1:
        _fail(f"x must be (tokens, hidden) with a contiguous last dimension, got {x.shape}")
    tokens, hidden = x.shape
    if gate_up.dim() != 3 or gate_up.shape[2] != hidden or gate_up.shape[1] % 2:
        _fail(f"gate_up must be (experts, 2 * width, {hidden}), got {tuple(gate_up.shape)}")
    experts, width = gate_up.shape[0], gate_up.shape[1] // 2
    if tuple(down.shape) != (experts, hidden, width):
        _fail(f"down must be ({experts}, {hidden}, {width}), got {tuple(down.shape)}")
    for name, weight in (("gate_up", gate_up), ("down", down)):
        if weight.dtype != x.dtype:
            _fail(f"{name} dtype {weight.dtype} differs from x's {x.dtype}")
        if not weight.is_contiguous():
            _fail(f"{name} must be contiguous")
        _same_device(name, weight, x.device)
    if topk_ids.dim() != 2 or topk_ids.shape[0] != tokens or topk_ids.dtype not in _INDEX_DTYPES:
        _fail(f"topk_ids must be ({tokens}, top_k) int32/int64, got {tuple(topk_ids.shape)}")
    if topk_weights.shape != topk_ids.shape:
        _fail(f"topk_weights {tuple(topk_weights.shape)} differs from topk_ids'")
    _same_device("topk_ids", topk_ids, x.device)
    _same_device("topk_weights", topk_weights, x.device)
