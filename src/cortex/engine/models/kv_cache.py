"""Where attention keeps keys and values: nowhere, contiguous (one sequence) or paged (batched).

Each cache answers `attend(layer, q, k, v, window=...)`: store this step's keys and values, then
attend the step's queries over everything the sequence has so far (or, with a sliding window,
over the last `window` positions up to each query's own). The model's `Attention` layer is the
same for all three; only this choice differs.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F

from cortex.engine import kernels
from cortex.engine.kernels.cpu_decode import DecodeLayout
from cortex.engine.kernels.metadata import AttentionMetadata

__all__ = ["ContiguousKVCache", "KVCache", "NoCache", "PagedKVCache", "window_mask"]


class KVCache(Protocol):
    """Stores a step's keys and values and attends its queries over the whole sequence."""

    def attend(
        self,
        layer: int,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        *,
        window: int | None = None,
    ) -> torch.Tensor:
        """Attention output for this step.

        Args:
            layer: index of the transformer block.
            q: (tokens, heads, head_dim), already rotated.
            k: (tokens, kv_heads, head_dim), already rotated.
            v: (tokens, kv_heads, head_dim).
            window: the query at position `p` sees keys `p - window + 1 .. p` only (sliding
                window attention); None sees keys `0 .. p`.

        Returns:
            (tokens, heads, head_dim).
        """
        ...

    def decode_layout(self, tokens: int) -> DecodeLayout | None:
        """Where a fused decode step of `tokens` new tokens finds its keys, or None: run eagerly."""
        ...


def _attention(
    q: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor | None,
    *,
    causal: bool,
) -> torch.Tensor:
    """Scaled dot-product attention with grouped heads, as (tokens, heads, head_dim).

    Args:
        q: (tokens, heads, head_dim).
        keys: (kv_heads, context, head_dim).
        values: (kv_heads, context, head_dim).
        mask: (tokens, context) bool, True where a query may look, or None.
        causal: query i sees keys 0..i (the tokens are the whole context).
    """
    # Batched 4-D inputs take torch's fused CPU attention kernel; 3-D ones fall back to the
    # unfused math path, several times slower.
    out = F.scaled_dot_product_attention(
        q.transpose(0, 1)[None],
        keys[None],
        values[None],
        attn_mask=mask,
        is_causal=causal,
        enable_gqa=True,
    )  # (1, heads, tokens, head_dim)
    return out[0].transpose(0, 1)


def window_mask(query_positions: torch.Tensor, num_keys: int, window: int | None) -> torch.Tensor:
    """(queries, num_keys) bool, True where the query at each position may see key `j`.

    Causal (`j <= p`), and with a sliding window also `j > p - window`.
    """
    keys = torch.arange(num_keys, device=query_positions.device)[None, :]
    mask = keys <= query_positions[:, None]
    if window is not None:
        mask &= keys > query_positions[:, None] - window
    return mask


class NoCache:
    """Causal attention over exactly the tokens of this call (a whole sequence from position 0)."""

    def attend(
        self,
        layer: int,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        *,
        window: int | None = None,
    ) -> torch.Tensor:
        """See `KVCache.attend`."""
        tokens = q.shape[0]
        if window is None or window >= tokens:
            return _attention(q, k.transpose(0, 1), v.transpose(0, 1), None, causal=True)
        mask = window_mask(torch.arange(tokens, device=q.device), tokens, window)
        return _attention(q, k.transpose(0, 1), v.transpose(0, 1), mask, causal=False)

    def decode_layout(self, tokens: int) -> DecodeLayout | None:
        """See `KVCache.decode_layout`: a whole sequence is never a decode step."""
        return None


class ContiguousKVCache:
    """Keys and values of one sequence in one preallocated tensor per layer.

    Args:
        num_layers: transformer blocks.
        num_kv_heads: key/value heads.
        head_dim: width of one head.
        max_tokens: capacity in tokens (prompt plus everything generated).
        device: where the cache lives.
        dtype: the model's dtype.

    Attributes:
        start: position of the first token of the step being run; the caller advances it.
    """

    def __init__(
        self,
        num_layers: int,
        num_kv_heads: int,
        head_dim: int,
        max_tokens: int,
        *,
        device: torch.device | str,
        dtype: torch.dtype,
    ) -> None:
        shape = (num_layers, num_kv_heads, max_tokens, head_dim)
        self.keys = torch.empty(shape, device=device, dtype=dtype)
        self.values = torch.empty(shape, device=device, dtype=dtype)
        self.max_tokens = max_tokens
        self.start = 0

    def attend(
        self,
        layer: int,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        *,
        window: int | None = None,
    ) -> torch.Tensor:
        """See `KVCache.attend`."""
        tokens = q.shape[0]
        end = self.start + tokens
        if end > self.max_tokens:
            raise ValueError(f"KV cache holds {self.max_tokens} tokens, step needs {end}")
        keys = self.keys[layer]  # (kv_heads, max_tokens, head_dim)
        values = self.values[layer]
        keys[:, self.start : end] = k.transpose(0, 1)
        values[:, self.start : end] = v.transpose(0, 1)
        if window is not None and end > window:
            if tokens == 1:  # decode: the window is a plain slice of the cache
                lo = end - window
                return _attention(q, keys[:, lo:end], values[:, lo:end], None, causal=False)
            windowed = window_mask(torch.arange(self.start, end, device=q.device), end, window)
            return _attention(q, keys[:, :end], values[:, :end], windowed, causal=False)
        mask = None
        if tokens > 1 and self.start > 0:
            # A chunk after a cached prefix: query i sees every key up to position start + i.
            mask = window_mask(torch.arange(self.start, end, device=q.device), end, None)
        causal = tokens > 1 and self.start == 0
        return _attention(q, keys[:, :end], values[:, :end], mask, causal=causal)

    def decode_layout(self, tokens: int) -> DecodeLayout | None:
        """See `KVCache.decode_layout`: one token at `start`, after keys 0..start - 1."""
        if tokens != 1 or self.keys.device.type != "cpu" or self.start >= self.max_tokens:
            return None
        return DecodeLayout(
            owner=self,
            views=self._row_views,
            store_rows=torch.tensor([self.start]),
            key_start=torch.zeros(1, dtype=torch.int64),
            key_len=torch.tensor([self.start + 1]),
            block_table=_NO_TABLE,
            block_size=0,
        )

    def _row_views(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        # (kv_heads, max_tokens, head_dim) per layer, seen as (rows, kv_heads, head_dim).
        keys = [layer.transpose(0, 1) for layer in self.keys]
        values = [layer.transpose(0, 1) for layer in self.values]
        return keys, values


class _DecodePlan:
    """Where each decoding sequence's keys lie in the paged cache, worked out once per step.

    The torch reference (`kernels.decode_attention` on CPU) re-derives this at every layer,
    gathers every block of every sequence, pads to the longest and zeroes the padding: about a
    dozen small ops per layer, a fifth of a batch-1 step on a small model. The plan does that
    bookkeeping once for all layers, and per layer leaves one store and one gather (none at all
    for a lone sequence whose blocks are consecutive, the usual case: the block manager hands
    out blank blocks in order) before the fused attention kernel.

    Attributes:
        slots: (tokens,) int64 cache rows of this step's new keys.
        span: for a single sequence whose blocks are consecutive, (first row, rows): its keys
            are a view of the cache, nothing is copied; else None.
        rows: otherwise (seqs * keys,) int64 cache rows to gather, padded per sequence with its
            own first row (finite and masked out, so no NaN can leak through 0 * NaN).
        mask: (seqs, 1, 1, keys) bool, which gathered keys each sequence sees; None when all
            sequences have the same length.
    """

    def __init__(self, meta: AttentionMetadata, block_size: int) -> None:
        self.slots = meta.slot_mapping
        seq_lens = [int(n) for n in meta.seq_lens.tolist()]
        self.num_seqs, self.keys = len(seq_lens), max(seq_lens)
        tables = meta.block_tables.tolist()
        self.span: tuple[int, int] | None = None
        self.rows: torch.Tensor | None = None
        self.mask: torch.Tensor | None = None
        if self.num_seqs == 1:
            blocks = tables[0][: -(-self.keys // block_size)]
            if blocks == list(range(blocks[0], blocks[0] + len(blocks))):
                self.span = (blocks[0] * block_size, self.keys)
                return
        rows: list[int] = []
        for table, length in zip(tables, seq_lens, strict=True):
            own = [table[t // block_size] * block_size + t % block_size for t in range(length)]
            rows += own + [own[0]] * (self.keys - length)
        self.rows = torch.tensor(rows, dtype=torch.int64)
        if min(seq_lens) != self.keys:
            positions = torch.arange(self.keys)
            lengths = torch.tensor(seq_lens)
            self.mask = (positions < lengths[:, None]).view(self.num_seqs, 1, 1, self.keys)

    @staticmethod
    def applies(meta: AttentionMetadata, q: torch.Tensor, window: int | None) -> bool:
        """Whether the plan serves this step: CPU decode through the torch kernels, no window."""
        return (
            meta.is_decode
            and window is None
            and not q.is_cuda
            and kernels.backend_for(q) == "torch"
            and bool((meta.slot_mapping >= 0).all())
            and bool((meta.seq_lens > 0).all())
        )

    def attend(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        k_cache: torch.Tensor,
        v_cache: torch.Tensor,
    ) -> torch.Tensor:
        """Store this step's K/V, then attend each sequence's query over its keys."""
        k_rows = k_cache.view(-1, *k_cache.shape[2:])  # (slots, kv_heads, head_dim)
        v_rows = v_cache.view(-1, *v_cache.shape[2:])
        k_rows.index_copy_(0, self.slots, k)
        v_rows.index_copy_(0, self.slots, v)
        if self.span is not None:
            start, length = self.span
            keys = k_rows[start : start + length].transpose(0, 1)[None]  # (1, kv_heads, L, d)
            values = v_rows[start : start + length].transpose(0, 1)[None]
        else:
            assert self.rows is not None
            shape = (self.num_seqs, self.keys, *k_cache.shape[2:])
            keys = k_rows.index_select(0, self.rows).view(shape).transpose(1, 2)
            values = v_rows.index_select(0, self.rows).view(shape).transpose(1, 2)
        query = q.unsqueeze(2)  # (seqs, heads, 1, head_dim)
        if q.dtype != torch.float32:
            # torch's fused CPU attention is 1.6x (160 keys) to 3x (1,024 keys) faster in
            # float32 than in bfloat16 for one query row, widening included
            # (`benchmarks/bench_decode_paths.py`).
            query, keys, values = query.float(), keys.float(), values.float()
        out = F.scaled_dot_product_attention(
            query,
            keys,
            values,
            attn_mask=self.mask,
            enable_gqa=q.shape[1] != k_cache.shape[2],
        )
        return out.squeeze(2).to(q.dtype)


class PagedKVCache:
    """One batched step over the engine's paged cache, through `cortex.engine.kernels`.

    Decode steps on CPU take a leaner path than the kernels' torch reference (same result):
    see `_DecodePlan`.

    Args:
        kv_caches: per layer, K and V of shape (num_blocks, block_size, kv_heads, head_dim).
        meta: where each sequence's tokens live and which of them are new.
        lean_decode: use `_DecodePlan` where it applies; False always runs the kernels
            (the reference the lean path is tested against).
    """

    def __init__(
        self,
        kv_caches: list[tuple[torch.Tensor, torch.Tensor]],
        meta: AttentionMetadata,
        *,
        lean_decode: bool = True,
    ) -> None:
        self.kv_caches = kv_caches
        self.meta = meta
        self.lean_decode = lean_decode
        self._plan: _DecodePlan | None = None
        self._planned = False

    def attend(
        self,
        layer: int,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        *,
        window: int | None = None,
    ) -> torch.Tensor:
        """See `KVCache.attend`; `tokens` are the packed new tokens of every sequence."""
        k_cache, v_cache = self.kv_caches[layer]
        if not self._planned:  # once per step: every layer has the same sequences
            self._planned = True
            if self.lean_decode and _DecodePlan.applies(self.meta, q, window):
                self._plan = _DecodePlan(self.meta, k_cache.shape[1])
        if self._plan is not None and window is None:
            return self._plan.attend(q, k, v, k_cache, v_cache)
        kernels.store_kv(k, v, k_cache, v_cache, self.meta.slot_mapping)
        if self.meta.is_decode:
            return kernels.decode_attention(q, k_cache, v_cache, self.meta, window=window)
        return kernels.prefill_attention(q, k_cache, v_cache, self.meta, window=window)

    def decode_layout(self, tokens: int) -> DecodeLayout | None:
        """See `KVCache.decode_layout`: CPU decode steps on the torch kernels, every slot real."""
        meta = self.meta
        k_cache = self.kv_caches[0][0]
        if (
            not meta.is_decode
            or k_cache.is_cuda
            or kernels.backend_for(k_cache) != "torch"
            or not bool((meta.slot_mapping >= 0).all())
            or not bool((meta.seq_lens > 0).all())
        ):
            return None
        caches = self.kv_caches

        def row_views() -> tuple[list[torch.Tensor], list[torch.Tensor]]:
            # (num_blocks, block_size, kv_heads, head_dim) seen as (rows, kv_heads, head_dim).
            keys = [k.view(-1, *k.shape[2:]) for k, _ in caches]
            values = [v.view(-1, *v.shape[2:]) for _, v in caches]
            return keys, values

        return DecodeLayout(
            owner=caches,
            views=row_views,
            store_rows=meta.slot_mapping,
            key_start=_NO_TABLE,
            key_len=meta.seq_lens,
            block_table=meta.block_tables,
            block_size=k_cache.shape[1],
        )


_NO_TABLE = torch.empty(0, dtype=torch.int64)
