"""What one forward step tells the attention kernels about the batch it runs."""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["AttentionMetadata"]


@dataclass
class AttentionMetadata:
    """The paged-KV description of one batched forward step.

    Tokens of every sequence in the step are packed along one axis. Sequence `i` contributes
    `q_len_i = cu_seqlens_q[i + 1] - cu_seqlens_q[i]` new tokens, which are the *last* `q_len_i`
    of its `seq_lens[i]` tokens (cached prefix + new tokens). Its keys and values live in the
    paged cache: token `t` of sequence `i` is in block `block_tables[i, t // block_size]`,
    row `t % block_size`. New tokens' K/V are written first through `slot_mapping`
    (`block * block_size + row`, -1 = skip), then attention reads everything from the cache.

    Attributes:
        is_decode: every sequence has exactly one new token (the decode kernel applies).
        slot_mapping: (num_tokens,) int64, cache slot of each new token.
        cu_seqlens_q: (num_seqs + 1,) int32, prefix sums of new-token counts.
        seq_lens: (num_seqs,) int32, total tokens per sequence including the new ones.
        block_tables: (num_seqs, max_blocks) int32; unused entries are padded with 0 and never read.
        max_seqlen_q: max new tokens of any sequence.
        max_seqlen_k: max total tokens of any sequence.
    """

    is_decode: bool
    slot_mapping: torch.Tensor
    cu_seqlens_q: torch.Tensor
    seq_lens: torch.Tensor
    block_tables: torch.Tensor
    max_seqlen_q: int
    max_seqlen_k: int
