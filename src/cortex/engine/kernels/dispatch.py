"""The kernel entry points: each picks the Triton kernel or its torch reference per call.

CUDA tensors run the compiled Triton kernels, CPU tensors the torch references. The environment
variable `CORTEX_KERNELS` overrides that choice and is read at every call: `triton` forces the
Triton kernels (on CPU they need `TRITON_INTERPRET=1`, set before Triton is first imported),
`torch` forces the references, `auto` or unset picks by device. Triton modules are imported only
when a Triton kernel is about to run, so CPU users never pay for them.
"""

from __future__ import annotations

import os
from typing import Literal

import torch

from cortex.engine.kernels import reference
from cortex.engine.kernels.checks import check_attention, check_moe, check_sample, check_store_kv
from cortex.engine.kernels.metadata import AttentionMetadata
from cortex.engine.kernels.moe_reference import moe_experts_reference

__all__ = [
    "Backend",
    "backend_for",
    "decode_attention",
    "moe_experts",
    "prefill_attention",
    "sample",
    "store_kv",
    "weight_only_matmul",
]

Backend = Literal["triton", "torch"]


def backend_for(tensor: torch.Tensor) -> Backend:
    """Which implementation a call on `tensor` runs, given `CORTEX_KERNELS` right now.

    Raises:
        ValueError: `CORTEX_KERNELS` is not one of `auto`, `triton`, `torch`.
        RuntimeError: Triton is forced on CPU tensors without `TRITON_INTERPRET=1`.
    """
    forced = os.environ.get("CORTEX_KERNELS", "auto").strip().lower() or "auto"
    if forced not in ("auto", "triton", "torch"):
        raise ValueError(f"CORTEX_KERNELS must be auto, triton or torch, not {forced!r}")
    if forced == "torch" or (forced == "auto" and not tensor.is_cuda):
        return "torch"
    if not tensor.is_cuda and os.environ.get("TRITON_INTERPRET") != "1":
        raise RuntimeError(
            "CORTEX_KERNELS=triton on CPU tensors needs TRITON_INTERPRET=1, "
            "set before triton is first imported"
        )
    return "triton"


def store_kv(
    key: torch.Tensor,
    value: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
) -> None:
    """Write each new token's key and value into its cache slot (slot -1: skip the token).

    Args:
        key: (tokens, kv_heads, head_dim), last dimension contiguous.
        value: (tokens, kv_heads, head_dim), last dimension contiguous.
        k_cache: (num_blocks, block_size, kv_heads, head_dim), contiguous, same dtype.
        v_cache: same layout as `k_cache`.
        slot_mapping: (tokens,) int64 `block * block_size + row`, or -1.
    """
    if backend_for(key) == "torch":
        check_store_kv(key, value, k_cache, v_cache, slot_mapping)
        reference.store_kv_reference(key, value, k_cache, v_cache, slot_mapping)
        return
    from cortex.engine.kernels.kv_store import store_kv_triton

    store_kv_triton(key, value, k_cache, v_cache, slot_mapping)


def prefill_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    meta: AttentionMetadata,
    scale: float | None = None,
    *,
    out: torch.Tensor | None = None,
    window: int | None = None,
) -> torch.Tensor:
    """Causal paged attention of a ragged batch of new tokens (prefill, extend, chunked prefill).

    Sequence `i` owns the query rows `cu_seqlens_q[i]:cu_seqlens_q[i+1]`, its last `q_len`
    tokens; each sees its sequence's keys up to its own position, read from the paged cache
    (store the step's K/V first). Query head `h` reads KV head `h // (heads // kv_heads)`.

    Args:
        q: (tokens, heads, head_dim), last dimension contiguous.
        k_cache: (num_blocks, block_size, kv_heads, head_dim).
        v_cache: same layout as `k_cache`.
        meta: the step's paged-KV description.
        scale: softmax scale; `head_dim ** -0.5` when None.
        out: optional buffer of the result's shape and dtype to write into (e.g. a CUDA
            graph's static output); returned.
        window: sliding window: the query at position `p` sees keys `p - window + 1 .. p`
            only; None for full causal attention.

    Returns:
        (tokens, heads, head_dim) in `q.dtype`; rows of no sequence are zero.
    """
    if backend_for(q) == "torch":
        check_attention(q, k_cache, v_cache, meta, decode=False)
        return reference.prefill_attention_reference(
            q, k_cache, v_cache, meta, scale, out=out, window=window
        )
    from cortex.engine.kernels.attention import prefill_attention_triton

    return prefill_attention_triton(q, k_cache, v_cache, meta, scale, out=out, window=window)


def decode_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    meta: AttentionMetadata,
    scale: float | None = None,
    *,
    out: torch.Tensor | None = None,
    window: int | None = None,
) -> torch.Tensor:
    """Paged attention of one new token per sequence over its whole context (decode).

    On Triton this is split-KV flash-decoding: a sequence's keys are cut into segments handled
    in parallel, then merged by log-sum-exp. The launch reads no device values, so it can be
    captured in a CUDA graph.

    Args:
        q: (num_seqs, heads, head_dim), last dimension contiguous.
        k_cache: (num_blocks, block_size, kv_heads, head_dim).
        v_cache: same layout as `k_cache`.
        meta: the step's paged-KV description; `seq_lens[i] == 0` (padding) gives zeros.
        scale: softmax scale; `head_dim ** -0.5` when None.
        out: optional buffer of the result's shape and dtype to write into (e.g. a CUDA
            graph's static output); returned.
        window: sliding window: each sequence sees only its last `window` keys; None for all.

    Returns:
        (num_seqs, heads, head_dim) in `q.dtype`.
    """
    if backend_for(q) == "torch":
        check_attention(q, k_cache, v_cache, meta, decode=True)
        return reference.decode_attention_reference(
            q, k_cache, v_cache, meta, scale, out=out, window=window
        )
    from cortex.engine.kernels.attention import decode_attention_triton

    return decode_attention_triton(q, k_cache, v_cache, meta, scale, out=out, window=window)


def sample(
    logits: torch.Tensor,
    temperature: torch.Tensor,
    top_k: torch.Tensor,
    top_p: torch.Tensor,
    min_p: torch.Tensor,
    seeds: torch.Tensor,
    steps: torch.Tensor,
    *,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Draw one token per row with per-row temperature, top-k, top-p, min-p and seed.

    Temperature <= 0 is greedy (first index of the maximum). Otherwise min-p, top-k and top-p
    cut the temperature-scaled logits at value thresholds (ties kept; see
    `reference.kept_mask`), and the token is a Gumbel-max draw whose noise is a pure function
    of (seed, step, token index): a request replays the same tokens whatever batch it is in.

    Args:
        logits: (rows, vocab) float logits.
        temperature: (rows,) float.
        top_k: (rows,) integer, 0 = off.
        top_p: (rows,) float, 1 = off.
        min_p: (rows,) float, 0 = off.
        seeds: (rows,) int64 per-request seeds.
        steps: (rows,) int64 per-request step counters.
        out: optional (rows,) int64 buffer to write the tokens into; returned.

    Returns:
        (rows,) int64 token ids.
    """
    if backend_for(logits) == "torch":
        check_sample(logits, temperature, top_k, top_p, min_p, seeds, steps)
        return reference.sample_reference(
            logits, temperature, top_k, top_p, min_p, seeds, steps, out=out
        )
    from cortex.engine.kernels.sampling import sample_triton

    return sample_triton(logits, temperature, top_k, top_p, min_p, seeds, steps, out=out)


def moe_experts(
    x: torch.Tensor,
    gate_up: torch.Tensor,
    down: torch.Tensor,
    topk_ids: torch.Tensor,
    topk_weights: torch.Tensor,
) -> torch.Tensor:
    """Mixture-of-experts SwiGLU: each token through its `top_k` experts, summed by weight.

    On Triton, the (token, expert) pairs are grouped by expert into tiles and one launch of a
    grouped matmul runs every expert's gate/up projection with the SwiGLU fused in, a second its
    down projection scaled by the routing weight; nothing is read back to the host, so the
    step can be captured in a CUDA graph.

    Args:
        x: (tokens, hidden), last dimension contiguous.
        gate_up: (experts, 2 * width, hidden), gate rows then up rows per expert, contiguous.
        down: (experts, hidden, width), contiguous.
        topk_ids: (tokens, top_k) int32/int64 expert ids.
        topk_weights: (tokens, top_k) routing weights.

    Returns:
        (tokens, hidden) in `x.dtype`.
    """
    if backend_for(x) == "torch":
        check_moe(x, gate_up, down, topk_ids, topk_weights)
        return moe_experts_reference(x, gate_up, down, topk_ids, topk_weights)
    from cortex.engine.kernels.moe import moe_experts_triton

    return moe_experts_triton(x, gate_up, down, topk_ids, topk_weights)


def weight_only_matmul(
    x: torch.Tensor,
    qweight: torch.Tensor,
    scales: torch.Tensor,
    mins: torch.Tensor | None,
    group_size: int | None,
) -> torch.Tensor:
    """`x @ W.T` with W held as int8 per channel or int4 group-wise (`cortex.engine.quant`).

    Args:
        x: (tokens, in_features) float32, float16 or bfloat16, last dimension contiguous.
        qweight: int8 (out, in), or uint8 (out, in / 2) with two int4 values per byte.
        scales: int8: (out,) per-channel scales; int4: (out, in / group_size).
        mins: int4: (out, in / group_size) group minimums; None for int8.
        group_size: int4's group size (32, 64, 128); None for int8.

    Returns:
        (tokens, out_features) in `x.dtype`, accumulated in float32.
    """
    if backend_for(x) == "torch":
        from cortex.engine.kernels.quant_reference import (
            check_weight_only,
            weight_only_matmul_reference,
        )

        check_weight_only(x, qweight, scales, mins, group_size)
        return weight_only_matmul_reference(x, qweight, scales, mins, group_size)
    from cortex.engine.kernels.quant_matmul import weight_only_matmul_triton

    return weight_only_matmul_triton(x, qweight, scales, mins, group_size)
