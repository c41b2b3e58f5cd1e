"""Random ragged batches over a shuffled paged KV cache, shared by the kernel tests."""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from cortex.engine.kernels import AttentionMetadata

__all__ = ["PagedBatch", "make_paged_batch", "random_lengths"]


@dataclass
class PagedBatch:
    """A filled cache, queries for the new tokens, and the step's metadata."""

    q: torch.Tensor
    k_cache: torch.Tensor
    v_cache: torch.Tensor
    meta: AttentionMetadata

    def to(self, device: torch.device) -> PagedBatch:
        """The same batch on `device`."""
        m = self.meta
        meta = AttentionMetadata(
            m.is_decode,
            m.slot_mapping.to(device),
            m.cu_seqlens_q.to(device),
            m.seq_lens.to(device),
            m.block_tables.to(device),
            m.max_seqlen_q,
            m.max_seqlen_k,
        )
        return PagedBatch(self.q.to(device), self.k_cache.to(device), self.v_cache.to(device), meta)

    def upcast(self) -> PagedBatch:
        """The same batch in float32 (the oracle's precision)."""
        return PagedBatch(self.q.float(), self.k_cache.float(), self.v_cache.float(), self.meta)


def random_lengths(
    rng: random.Random, batch: int, *, max_new: int, max_context: int
) -> tuple[list[int], list[int]]:
    """(new tokens, cached prefix) per sequence; a few hit 1 or block-boundary lengths."""
    q_lens, contexts = [], []
    for _ in range(batch):
        q_lens.append(rng.choice([1, 16, 32, rng.randint(1, max_new)]))
        contexts.append(rng.choice([0, 0, 16, rng.randint(0, max_context)]))
    return q_lens, contexts


def make_paged_batch(
    rng: random.Random,
    *,
    q_lens: list[int],
    contexts: list[int],
    num_kv_heads: int,
    group: int,
    head_dim: int,
    block_size: int,
    dtype: torch.dtype,
    decode: bool = False,
    extra_tokens: int = 0,
) -> PagedBatch:
    """Build a batch whose sequence i has contexts[i] cached and q_lens[i] new tokens.

    Blocks are handed out in a shuffled order (non-contiguous physical ids), the block table
    is padded with 0, and every cache slot no sequence owns holds NaN, so a kernel that reads
    past a sequence's end fails. `extra_tokens` appends query rows owned by no sequence.
    """
    gen = torch.Generator().manual_seed(rng.randrange(2**31))
    seq_lens = [c + n for c, n in zip(contexts, q_lens, strict=True)]
    blocks_per_seq = [-(-n // block_size) for n in seq_lens]
    num_blocks = sum(blocks_per_seq) + 3
    order = torch.randperm(num_blocks, generator=gen)
    width = max(1, *blocks_per_seq)
    tables = torch.zeros(len(seq_lens), width, dtype=torch.int32)
    shape = (num_blocks, block_size, num_kv_heads, head_dim)
    k_cache = torch.full(shape, float("nan"), dtype=dtype)
    v_cache = torch.full(shape, float("nan"), dtype=dtype)
    used = 0
    for i, (seq_len, n_blocks) in enumerate(zip(seq_lens, blocks_per_seq, strict=True)):
        tables[i, :n_blocks] = order[used : used + n_blocks]
        used += n_blocks
        for t in range(0, seq_len, block_size):
            rows = min(block_size, seq_len - t)
            block = int(tables[i, t // block_size])
            for cache in (k_cache, v_cache):
                fill = torch.randn(rows, num_kv_heads, head_dim, generator=gen)
                cache[block, :rows] = fill.to(dtype)
    num_tokens = sum(q_lens) + extra_tokens
    q = torch.randn(num_tokens, num_kv_heads * group, head_dim, generator=gen).to(dtype)
    cu = [0]
    for n in q_lens:
        cu.append(cu[-1] + n)
    meta = AttentionMetadata(
        is_decode=decode,
        slot_mapping=torch.full((num_tokens,), -1, dtype=torch.int64),
        cu_seqlens_q=torch.tensor(cu, dtype=torch.int32),
        seq_lens=torch.tensor(seq_lens, dtype=torch.int32),
        block_tables=tables,
        max_seqlen_q=max(q_lens, default=0),
        max_seqlen_k=max(seq_lens, default=0),
    )
    return PagedBatch(q, k_cache, v_cache, meta)
