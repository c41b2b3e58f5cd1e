"""Sliding-window paged attention: Triton against the reference, the reference against a loop."""

from __future__ import annotations

import random

import pytest
import torch

from cortex.engine import kernels
from cortex.engine.kernels import decode_attention_reference, prefill_attention_reference

from .paged import make_paged_batch

SPEC = {"num_kv_heads": 2, "group": 3, "head_dim": 64, "block_size": 16, "dtype": torch.float32}


@pytest.mark.parametrize("window", [1, 7, 40, 1000])
def test_windowed_prefill_matches_reference(
    window: int, triton_kernels: None, device: torch.device
) -> None:
    rng = random.Random(f"window-prefill-{window}")
    # Fresh prompts, chunks after a cached prefix, and one sequence with nothing new.
    batch = make_paged_batch(rng, q_lens=[90, 5, 0, 33], contexts=[0, 70, 12, 100], **SPEC).to(
        device
    )
    out = torch.full_like(batch.q, float("nan"))
    kernels.prefill_attention(
        batch.q, batch.k_cache, batch.v_cache, batch.meta, out=out, window=window
    )
    ref = prefill_attention_reference(
        batch.q, batch.k_cache, batch.v_cache, batch.meta, window=window
    )
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("window", [1, 7, 40, 1000])
def test_windowed_decode_matches_reference(
    window: int, triton_kernels: None, device: torch.device
) -> None:
    rng = random.Random(f"window-decode-{window}")
    batch = make_paged_batch(
        rng, q_lens=[1] * 5, contexts=[0, 6, 39, 128, 250], decode=True, **SPEC
    ).to(device)
    out = torch.full_like(batch.q, float("nan"))
    kernels.decode_attention(
        batch.q, batch.k_cache, batch.v_cache, batch.meta, out=out, window=window
    )
    ref = decode_attention_reference(
        batch.q, batch.k_cache, batch.v_cache, batch.meta, window=window
    )
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    prefilled = prefill_attention_reference(
        batch.q, batch.k_cache, batch.v_cache, batch.meta, window=window
    )
    torch.testing.assert_close(ref, prefilled, rtol=1e-5, atol=1e-5)


def test_windowed_reference_matches_a_token_by_token_softmax() -> None:
    rng = random.Random("window-loop")
    window = 6
    batch = make_paged_batch(rng, q_lens=[4, 9], contexts=[20, 0], **SPEC)
    out = prefill_attention_reference(
        batch.q, batch.k_cache, batch.v_cache, batch.meta, window=window
    )
    block_size, group = batch.k_cache.shape[1], SPEC["group"]
    row = 0
    for seq, seq_len in enumerate(batch.meta.seq_lens.tolist()):
        q_len = int(batch.meta.cu_seqlens_q[seq + 1] - batch.meta.cu_seqlens_q[seq])
        table = batch.meta.block_tables[seq]
        keys = torch.stack(
            [batch.k_cache[table[t // block_size], t % block_size] for t in range(seq_len)]
        )
        values = torch.stack(
            [batch.v_cache[table[t // block_size], t % block_size] for t in range(seq_len)]
        )
        for j in range(q_len):
            position = seq_len - q_len + j
            lo = max(0, position - window + 1)
            for head in range(batch.q.shape[1]):
                k = keys[lo : position + 1, head // group]
                v = values[lo : position + 1, head // group]
                weights = torch.softmax(k @ batch.q[row, head] / 64**0.5, 0)
                torch.testing.assert_close(out[row, head], weights @ v, rtol=1e-5, atol=1e-5)
            row += 1
