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


class PagedKVCache:
    """One batched step over the engine's paged cache, through `cortex.engine.kernels`.

    Args:
        kv_caches: per layer, K and V of shape (num_blocks, block_size, kv_heads, head_dim).
        meta: where each sequence's tokens live and which of them are new.
    """

    def __init__(
        self, kv_caches: list[tuple[torch.Tensor, torch.Tensor]], meta: AttentionMetadata
    ) -> None:
        self.kv_caches = kv_caches
        self.meta = meta

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
        kernels.store_kv(k, v, k_cache, v_cache, self.meta.slot_mapping)
        if self.meta.is_decode:
            return kernels.decode_attention(q, k_cache, v_cache, self.meta, window=window)
        return kernels.prefill_attention(q, k_cache, v_cache, self.meta, window=window)
