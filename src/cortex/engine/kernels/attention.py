"""Triton paged attention: varlen causal prefill/extend, and split-KV flash-decoding.

Both read K/V through the block table from the cache `(num_blocks, block_size, kv_heads, dim)`
and run an fp32 online softmax in base 2 (the scale is pre-multiplied by log2 e). The torch
twins are `reference.prefill_attention_reference` and `reference.decode_attention_reference`.

Prefill (after vLLM's unified kernel): the grid is (query blocks, kv heads). A program takes
BLOCK_Q query tokens of one sequence times the GROUP query heads sharing one KV head, packed
into BLOCK_M >= 16 rows (row m = token m // GROUP, head m % GROUP), so each K/V tile is loaded
once per group and `tl.dot` gets 16+ rows even for odd groups. It finds its sequence by binary
search over `cu_seqlens_q` (no host sync), walks first the key tiles every row sees without a
mask, then the tiles up to the diagonal with the causal mask, and never visits later tiles.

Decode (after SGLang's grouped flash-decoding): stage 1 runs (seqs, kv heads, MAX_SPLITS)
programs; each takes the GROUP heads of one KV head (padded to 16 rows) over one segment of the
keys and writes a normalised partial output and its log-sum-exp. The number of segments of a
sequence comes from its length inside the kernel, so the grid depends only on the batch shape
(CUDA-graph safe). Stage 2 merges the segments of each (seq, head) by their log-sum-exp.
"""

# Triton's @jit functions take untyped tensors/pointers; the Python launchers stay typed.
# mypy: disallow-untyped-defs=False, disallow-incomplete-defs=False

from __future__ import annotations

import torch
import triton
import triton.language as tl

from cortex.engine.kernels.checks import check_attention
from cortex.engine.kernels.metadata import AttentionMetadata
from cortex.engine.kernels.tuning import (
    decode_config,
    interpreting,
    next_power_of_2,
    prefill_config,
)

__all__ = ["decode_attention_triton", "prefill_attention_triton"]

_LOG2_E = 1.4426950408889634


@triton.jit
def _attend_tile(
    q, acc, l_i, m_i, start, seq_end, q_pos,
    k_cache_ptr, v_cache_ptr, table_ptr, kv_head, scale_log2,
    stride_cb, stride_cs, stride_ch, window,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_SIZE: tl.constexpr,
    TILE_N: tl.constexpr, CAUSAL: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr,
    WINDOWED: tl.constexpr,
):  # fmt: skip
    """One online-softmax step of rows `q` over keys [start, start + TILE_N) below seq_end.

    With CAUSAL, row r sees keys up to q_pos[r]; with WINDOWED too, only those after
    q_pos[r] - window (sliding window).
    """
    n = start + tl.arange(0, TILE_N)
    n_ok = n < seq_end
    d = tl.arange(0, BLOCK_D)
    d_ok = d < HEAD_DIM
    block = tl.load(table_ptr + n // BLOCK_SIZE, mask=n_ok, other=0).to(tl.int64)
    offset = block * stride_cb + (n % BLOCK_SIZE) * stride_cs + kv_head * stride_ch
    k_t = tl.load(
        k_cache_ptr + offset[None, :] + d[:, None], mask=n_ok[None, :] & d_ok[:, None], other=0.0
    )  # (BLOCK_D, TILE_N)
    v = tl.load(
        v_cache_ptr + offset[:, None] + d[None, :], mask=n_ok[:, None] & d_ok[None, :], other=0.0
    )  # (TILE_N, BLOCK_D)
    if UPCAST:  # the interpreter cannot compute in bf16 (it would multiply raw bits)
        k_t = k_t.to(tl.float32)
        v = v.to(tl.float32)
    qk = tl.dot(q, k_t, input_precision=PRECISION) * scale_log2  # (BLOCK_M, TILE_N)
    if CAUSAL:
        visible = (n[None, :] <= q_pos[:, None]) & n_ok[None, :]
        if WINDOWED:
            visible = visible & (n[None, :] > q_pos[:, None] - window)
    else:
        visible = n_ok[None, :] & (q_pos[:, None] >= 0)
    qk = tl.where(visible, qk, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(qk, 1))
    # A row that has seen no key yet keeps m = -inf; subtract 0 instead to avoid inf - inf.
    m_sub = tl.where(m_new > float("-inf"), m_new, 0.0)
    p = tl.exp2(qk - m_sub[:, None])
    alpha = tl.exp2(m_i - m_sub)
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
    return acc, l_i, m_new


@triton.jit
def _find_seq(cu_seqlens_ptr, q_block, num_seqs, BLOCK_Q: tl.constexpr):
    """The sequence owning query block `q_block`; sequence i starts at cu[i] // BLOCK_Q + i."""
    lo = tl.full((), 0, tl.int32)
    hi = tl.full((), 0, tl.int32) + num_seqs
    while lo < hi:
        mid = (lo + hi) // 2
        first_block = tl.load(cu_seqlens_ptr + mid).to(tl.int32) // BLOCK_Q + mid
        if first_block <= q_block:
            lo = mid + 1
        else:
            hi = mid
    return lo - 1


@triton.jit
def _prefill_kernel(
    q_ptr, k_cache_ptr, v_cache_ptr, out_ptr, cu_seqlens_ptr, seq_lens_ptr, tables_ptr,
    scale_log2, num_seqs, num_tokens,
    stride_qt, stride_qh, stride_ot, stride_oh, stride_cb, stride_cs, stride_ch, stride_bt,
    window,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_SIZE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_Q: tl.constexpr,
    TILE_N: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr,
    WINDOWED: tl.constexpr,
):  # fmt: skip
    q_block = tl.program_id(0)
    kv_head = tl.program_id(1)
    seq = _find_seq(cu_seqlens_ptr, q_block, num_seqs, BLOCK_Q)
    q_start = tl.load(cu_seqlens_ptr + seq).to(tl.int32)
    q_len = tl.load(cu_seqlens_ptr + seq + 1).to(tl.int32) - q_start
    # The last sequence's programs also zero the rows past it, so every output row is written.
    rows_end = tl.where(seq == num_seqs - 1, num_tokens - q_start, q_len)
    local = q_block - (q_start // BLOCK_Q + seq)
    if local * BLOCK_Q < rows_end:
        seq_len = tl.load(seq_lens_ptr + seq).to(tl.int32)
        context_len = seq_len - q_len
        m = tl.arange(0, BLOCK_M)
        q_idx = local * BLOCK_Q + m // GROUP
        head = kv_head * GROUP + m % GROUP
        in_group = m < BLOCK_Q * GROUP
        row_ok = in_group & (q_idx < q_len)
        d = tl.arange(0, BLOCK_D)
        d_ok = d < HEAD_DIM
        token = (q_start + q_idx).to(tl.int64)
        q = tl.load(
            q_ptr + token[:, None] * stride_qt + head[:, None] * stride_qh + d[None, :],
            mask=row_ok[:, None] & d_ok[None, :],
            other=0.0,
        )
        if UPCAST:
            q = q.to(tl.float32)
        q_pos = context_len + q_idx  # absolute position of each row's query
        table_ptr = tables_ptr + seq.to(tl.int64) * stride_bt
        m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
        l_i = tl.full([BLOCK_M], 0.0, tl.float32)
        acc = tl.full([BLOCK_M, BLOCK_D], 0.0, tl.float32)
        first_q = local * BLOCK_Q
        last_q = tl.minimum(first_q + BLOCK_Q, q_len) - 1
        # Keys below context_len + first_q + 1 are visible to every row: no mask needed there.
        # A sliding window starts at the first tile the first row sees and masks every tile.
        first_tile = 0
        full_tiles = (context_len + first_q + 1) // TILE_N
        if WINDOWED:
            first_tile = tl.maximum(context_len + first_q - window + 1, 0) // TILE_N
            full_tiles = first_tile
        end = context_len + last_q + 1
        for tile in range(first_tile, full_tiles):
            acc, l_i, m_i = _attend_tile(
                q, acc, l_i, m_i, tile * TILE_N, seq_len, q_pos,
                k_cache_ptr, v_cache_ptr, table_ptr, kv_head, scale_log2,
                stride_cb, stride_cs, stride_ch, window,
                HEAD_DIM, BLOCK_D, BLOCK_SIZE, TILE_N, False, UPCAST, PRECISION, WINDOWED,
            )  # fmt: skip
        for tile in range(full_tiles, (end + TILE_N - 1) // TILE_N):
            acc, l_i, m_i = _attend_tile(
                q, acc, l_i, m_i, tile * TILE_N, seq_len, q_pos,
                k_cache_ptr, v_cache_ptr, table_ptr, kv_head, scale_log2,
                stride_cb, stride_cs, stride_ch, window,
                HEAD_DIM, BLOCK_D, BLOCK_SIZE, TILE_N, True, UPCAST, PRECISION, WINDOWED,
            )  # fmt: skip
        out = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]
        out = tl.where(row_ok[:, None], out, 0.0)
        store_ok = in_group & (q_idx < rows_end)
        tl.store(
            out_ptr + token[:, None] * stride_ot + head[:, None] * stride_oh + d[None, :],
            out.to(out_ptr.dtype.element_ty),
            mask=store_ok[:, None] & d_ok[None, :],
        )


@triton.jit
def _decode_split_kernel(
    q_ptr, k_cache_ptr, v_cache_ptr, seq_lens_ptr, tables_ptr, part_out_ptr, part_lse_ptr,
    scale_log2, stride_qs, stride_qh, stride_cb, stride_cs, stride_ch, stride_bt, window,
    NUM_HEADS: tl.constexpr, GROUP: tl.constexpr, HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_SIZE: tl.constexpr, BLOCK_H: tl.constexpr,
    TILE_N: tl.constexpr, MAX_SPLITS: tl.constexpr, MIN_SPLIT_LEN: tl.constexpr,
    UPCAST: tl.constexpr, PRECISION: tl.constexpr, WINDOWED: tl.constexpr,
):  # fmt: skip
    seq = tl.program_id(0)
    kv_head = tl.program_id(1)
    split = tl.program_id(2)
    seq_len = tl.load(seq_lens_ptr + seq).to(tl.int32)
    first = tl.full((), 0, tl.int32)
    if WINDOWED:  # the query sees only the last `window` keys: split those
        first = tl.maximum(seq_len - window, 0)
    num_keys = seq_len - first
    num_splits = (num_keys + MIN_SPLIT_LEN - 1) // MIN_SPLIT_LEN
    num_splits = tl.maximum(tl.minimum(num_splits, MAX_SPLITS), 1)
    per_split = (num_keys + num_splits - 1) // num_splits
    split_len = (per_split + TILE_N - 1) // TILE_N * TILE_N
    start = first + split * split_len
    end = tl.minimum(start + split_len, seq_len)
    h = tl.arange(0, BLOCK_H)
    head = kv_head * GROUP + h
    h_ok = h < GROUP
    d = tl.arange(0, BLOCK_D)
    d_ok = d < HEAD_DIM
    q = tl.load(
        q_ptr + seq.to(tl.int64) * stride_qs + head[:, None] * stride_qh + d[None, :],
        mask=h_ok[:, None] & d_ok[None, :],
        other=0.0,
    )
    if UPCAST:
        q = q.to(tl.float32)
    table_ptr = tables_ptr + seq.to(tl.int64) * stride_bt
    m_i = tl.full([BLOCK_H], float("-inf"), tl.float32)
    l_i = tl.full([BLOCK_H], 0.0, tl.float32)
    acc = tl.full([BLOCK_H, BLOCK_D], 0.0, tl.float32)
    q_pos = tl.full([BLOCK_H], 0, tl.int32)  # unused without the causal mask
    for tile_start in range(start, end, TILE_N):
        acc, l_i, m_i = _attend_tile(
            q, acc, l_i, m_i, tile_start, end, q_pos,
            k_cache_ptr, v_cache_ptr, table_ptr, kv_head, scale_log2,
            stride_cb, stride_cs, stride_ch, 0,
            HEAD_DIM, BLOCK_D, BLOCK_SIZE, TILE_N, False, UPCAST, PRECISION, False,
        )  # fmt: skip
    seen = l_i > 0
    lse = tl.where(seen, m_i + tl.log2(tl.where(seen, l_i, 1.0)), float("-inf"))
    out = acc / tl.where(seen, l_i, 1.0)[:, None]
    slot = (seq * NUM_HEADS + head).to(tl.int64) * MAX_SPLITS + split
    tl.store(part_lse_ptr + slot, lse, mask=h_ok)
    tl.store(
        part_out_ptr + slot[:, None] * HEAD_DIM + d[None, :],
        out,
        mask=h_ok[:, None] & d_ok[None, :],
    )


@triton.jit
def _decode_merge_kernel(
    part_out_ptr, part_lse_ptr, out_ptr, stride_os, stride_oh,
    NUM_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    MAX_SPLITS: tl.constexpr,
):  # fmt: skip
    seq = tl.program_id(0)
    head = tl.program_id(1)
    s = tl.arange(0, MAX_SPLITS)
    d = tl.arange(0, BLOCK_D)
    d_ok = d < HEAD_DIM
    slot = (seq * NUM_HEADS + head).to(tl.int64) * MAX_SPLITS + s
    lse = tl.load(part_lse_ptr + slot)
    seen = lse > float("-inf")
    lse_max = tl.max(lse, 0)
    weight = tl.exp2(lse - tl.where(lse_max > float("-inf"), lse_max, 0.0))
    parts = tl.load(
        part_out_ptr + slot[:, None] * HEAD_DIM + d[None, :],
        mask=seen[:, None] & d_ok[None, :],
        other=0.0,
    )
    total = tl.sum(weight, 0)
    out = tl.sum(weight[:, None] * parts, 0) / tl.where(total > 0, total, 1.0)
    tl.store(
        out_ptr + seq.to(tl.int64) * stride_os + head * stride_oh + d,
        out.to(out_ptr.dtype.element_ty),
        mask=d_ok,
    )


def _precision(dtype: torch.dtype) -> str:
    # fp32 inputs would otherwise run TF32 on the GPU (1e-3 error); 16-bit inputs ignore this.
    return "ieee" if dtype == torch.float32 else "tf32"


def _output(q: torch.Tensor, out: torch.Tensor | None) -> torch.Tensor:
    if out is None:
        return torch.empty_like(q)
    if out.shape != q.shape or out.dtype != q.dtype or out.device != q.device:
        raise ValueError(f"out must be {tuple(q.shape)} {q.dtype} on {q.device}")
    if out.stride(-1) != 1:
        raise ValueError(f"out must have a contiguous last dimension, strides {out.stride()}")
    return out


def prefill_attention_triton(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    meta: AttentionMetadata,
    scale: float | None = None,
    *,
    out: torch.Tensor | None = None,
    window: int | None = None,
) -> torch.Tensor:
    """Triton `prefill_attention`; same contract as `reference.prefill_attention_reference`.

    Args:
        out: optional (tokens, heads, head_dim) buffer to write into; every row is written.
    """
    check_attention(q, k_cache, v_cache, meta, decode=False)
    out = _output(q, out)
    num_tokens, num_heads, head_dim = q.shape
    num_kv_heads = k_cache.shape[2]
    num_seqs = meta.seq_lens.shape[0]
    if num_tokens == 0:
        return out
    if num_seqs == 0:
        return out.zero_()
    group = num_heads // num_kv_heads
    cfg = prefill_config(group, head_dim)
    scale = head_dim**-0.5 if scale is None else scale
    grid = (num_tokens // cfg.block_q + num_seqs, num_kv_heads)
    _prefill_kernel[grid](
        q, k_cache, v_cache, out, meta.cu_seqlens_q, meta.seq_lens, meta.block_tables,
        scale * _LOG2_E, num_seqs, num_tokens,
        q.stride(0), q.stride(1), out.stride(0), out.stride(1),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2), meta.block_tables.stride(0),
        window or 0,
        GROUP=group, HEAD_DIM=head_dim, BLOCK_D=max(16, next_power_of_2(head_dim)),
        BLOCK_SIZE=k_cache.shape[1], BLOCK_M=cfg.block_m, BLOCK_Q=cfg.block_q,
        TILE_N=cfg.tile_n, UPCAST=interpreting(), PRECISION=_precision(q.dtype),
        WINDOWED=window is not None,
        num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )  # fmt: skip
    return out


def decode_attention_triton(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    meta: AttentionMetadata,
    scale: float | None = None,
    *,
    out: torch.Tensor | None = None,
    window: int | None = None,
) -> torch.Tensor:
    """Triton `decode_attention` (split-KV); same contract as the reference.

    Reads no device values on the host, so it can be captured in a CUDA graph.

    Args:
        out: optional (num_seqs, heads, head_dim) buffer to write into.
    """
    check_attention(q, k_cache, v_cache, meta, decode=True)
    out = _output(q, out)
    num_seqs, num_heads, head_dim = q.shape
    num_kv_heads = k_cache.shape[2]
    if num_seqs == 0:
        return out
    group = num_heads // num_kv_heads
    cfg = decode_config(num_seqs, num_kv_heads, group, q.device)
    scale = head_dim**-0.5 if scale is None else scale
    part_out = torch.empty(
        (num_seqs, num_heads, cfg.max_splits, head_dim), dtype=torch.float32, device=q.device
    )
    part_lse = torch.empty(
        (num_seqs, num_heads, cfg.max_splits), dtype=torch.float32, device=q.device
    )
    block_d = max(16, next_power_of_2(head_dim))
    _decode_split_kernel[(num_seqs, num_kv_heads, cfg.max_splits)](
        q, k_cache, v_cache, meta.seq_lens, meta.block_tables, part_out, part_lse,
        scale * _LOG2_E, q.stride(0), q.stride(1),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2), meta.block_tables.stride(0),
        window or 0, NUM_HEADS=num_heads, GROUP=group, HEAD_DIM=head_dim, BLOCK_D=block_d,
        BLOCK_SIZE=k_cache.shape[1], BLOCK_H=cfg.block_h, TILE_N=cfg.tile_n,
        MAX_SPLITS=cfg.max_splits, MIN_SPLIT_LEN=cfg.min_split_len,
        UPCAST=interpreting(), PRECISION=_precision(q.dtype), WINDOWED=window is not None,
        num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )  # fmt: skip
    _decode_merge_kernel[(num_seqs, num_heads)](
        part_out, part_lse, out, out.stride(0), out.stride(1),
        NUM_HEADS=num_heads, HEAD_DIM=head_dim, BLOCK_D=block_d, MAX_SPLITS=cfg.max_splits,
    )  # fmt: skip
    return out
