"""The lean decode path: matmuls as the device policy says; paged decode equals the reference."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from cortex.engine.device import DtypePolicy
from cortex.engine.engine import Engine
from cortex.engine.kernels.metadata import AttentionMetadata
from cortex.engine.models.kv_cache import PagedKVCache
from cortex.engine.models.llama import Llama, linear
from cortex.engine.sampling import SamplingParams
from cortex.engine.tokenizer import Tokenizer


def test_linear_widens_prefill_blocks_and_keeps_decode_rows_in_the_weights_dtype() -> None:
    torch.manual_seed(0)
    weight = torch.randn(48, 32).to(torch.bfloat16)
    bias = torch.randn(48).to(torch.bfloat16)
    policy = DtypePolicy(torch.bfloat16, torch.float32, prefill_min_rows=8)
    block = torch.randn(8, 32).to(torch.bfloat16)
    wide = F.linear(block.float(), weight.float(), bias.float()).to(torch.bfloat16)
    out = linear(block, weight, bias, policy)
    assert out.dtype == torch.bfloat16 and torch.equal(out, wide)
    # Below the threshold the bfloat16 GEMM runs (its rounding differs from the wide one).
    few = block[:4]
    assert torch.equal(linear(few, weight, bias, policy), F.linear(few, weight, bias))
    # One row: `torch.mv` or `F.linear`, as the policy says; the same sums either way.
    row = block[:1]
    by_mv = linear(row, weight, bias, policy)
    by_linear = linear(row, weight, bias, replace(policy, row_kernel="linear"))
    assert torch.equal(by_linear, F.linear(row, weight, bias))
    torch.testing.assert_close(by_mv, by_linear, rtol=2e-2, atol=2e-2)


def _decode_step(
    seq_lens: list[int], tables: list[list[int]], dtype: torch.dtype, *, lean: bool
) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
    """One decode step of 2 layers over a random paged cache (new token: each sequence's last)."""
    gen = torch.Generator().manual_seed(0)
    blocks, block_size, kv_heads, heads, dim = 12, 4, 2, 6, 8
    caches = [
        tuple(
            torch.randn(blocks, block_size, kv_heads, dim, generator=gen).to(dtype)
            for _ in range(2)
        )
        for _ in range(2)
    ]
    width = max(len(t) for t in tables)
    meta = AttentionMetadata(
        is_decode=True,
        slot_mapping=torch.tensor(
            [
                t[(n - 1) // block_size] * block_size + (n - 1) % block_size
                for t, n in zip(tables, seq_lens, strict=True)
            ]
        ),
        cu_seqlens_q=torch.arange(len(seq_lens) + 1, dtype=torch.int32),
        seq_lens=torch.tensor(seq_lens, dtype=torch.int32),
        block_tables=torch.tensor([t + [0] * (width - len(t)) for t in tables], dtype=torch.int32),
        max_seqlen_q=1,
        max_seqlen_k=max(seq_lens),
    )
    cache = PagedKVCache(caches, meta, lean_decode=lean)  # type: ignore[arg-type]
    outs = []
    for layer in range(2):
        q = torch.randn(len(seq_lens), heads, dim, generator=gen).to(dtype)
        k = torch.randn(len(seq_lens), kv_heads, dim, generator=gen).to(dtype)
        v = torch.randn(len(seq_lens), kv_heads, dim, generator=gen).to(dtype)
        outs.append(cache.attend(layer, q, k, v))
    return torch.stack(outs), caches  # type: ignore[return-value]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(
    ("seq_lens", "tables"),
    [
        ([7], [[3, 4]]),  # one sequence, consecutive blocks: attended in place
        ([9], [[5, 2, 8]]),  # one sequence, scattered blocks: gathered
        ([1], [[11]]),
        ([7, 13, 4], [[3, 4], [0, 6, 9, 1], [10]]),  # ragged batch: gathered and masked
        ([8, 8], [[2, 7], [1, 3]]),  # equal lengths: no mask
    ],
)
def test_lean_paged_decode_equals_the_kernels_reference(
    seq_lens: list[int], tables: list[list[int]], dtype: torch.dtype
) -> None:
    lean, lean_caches = _decode_step(seq_lens, tables, dtype, lean=True)
    reference, reference_caches = _decode_step(seq_lens, tables, dtype, lean=False)
    tolerance = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(lean, reference, rtol=tolerance, atol=tolerance)
    for (k, v), (k_ref, v_ref) in zip(lean_caches, reference_caches, strict=True):
        assert torch.equal(k, k_ref) and torch.equal(v, v_ref)  # the same slots were written


def test_a_nan_in_a_slot_past_the_end_does_not_leak() -> None:
    # A freed block may hold anything past a sequence's end; padding reads only its own keys.
    seq_lens = [3, 6]  # blocks [1] and [4, 5]
    torch.manual_seed(0)
    caches = [(torch.randn(6, 4, 1, 8), torch.randn(6, 4, 1, 8))]
    caches[0][0][1, 3] = float("nan")  # row 3 of sequence 0's only block: past its end
    caches[0][1][1, 3] = float("nan")
    meta = AttentionMetadata(
        is_decode=True,
        slot_mapping=torch.tensor([1 * 4 + 2, 5 * 4 + 1]),
        cu_seqlens_q=torch.arange(3, dtype=torch.int32),
        seq_lens=torch.tensor(seq_lens, dtype=torch.int32),
        block_tables=torch.tensor([[1, 0], [4, 5]], dtype=torch.int32),
        max_seqlen_q=1,
        max_seqlen_k=6,
    )
    q, k, v = torch.randn(2, 2, 8), torch.randn(2, 1, 8), torch.randn(2, 1, 8)
    out = PagedKVCache(caches, meta).attend(0, q, k, v)
    assert torch.isfinite(out).all()


async def test_engine_greedy_at_batch_1_and_batched_equals_generate(
    smollm2: Llama, default_model_dir: Path
) -> None:
    # The real model, float32: the engine's lean paged decode follows the contiguous cache.
    tokenizer = Tokenizer.from_dir(default_model_dir)
    prompts = [
        tokenizer.apply_chat_template([{"role": "user", "content": text}])
        for text in ("What is the capital of France?", "Write a haiku about the sea.")
    ]
    expected = [smollm2.generate(p, 12, stop_token_ids=[]) for p in prompts]
    engine = Engine(smollm2, tokenizer, kv_cache_mb=16, max_num_seqs=4)
    params = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)

    async def run(prompt: list[int]) -> list[int]:
        events = [e async for e in engine.generate(prompt, params)]
        return [e.token_id for e in events if e.token_id is not None]

    try:
        alone = [await run(p) for p in prompts]
        together = list(await asyncio.gather(*(run(p) for p in prompts)))
    finally:
        engine.close()
    assert alone == expected
    assert together == expected
