"""Triton paged attention (prefill and split-KV decode) against the torch references."""

from __future__ import annotations

import random
from typing import Any

import pytest
import torch

from cortex.engine import kernels
from cortex.engine.kernels import decode_attention_reference, prefill_attention_reference

from .paged import PagedBatch, make_paged_batch, random_lengths

# (head_dim, GQA group, kv heads, block size, dtype): covers head dims 64/128, groups 1/3/8,
# block sizes 16/32 and three dtypes without the full cartesian product (the interpreter is
# slow); lengths are drawn per case from a seeded RNG.
CASES = [
    (64, 1, 2, 16, torch.float32),
    (64, 3, 2, 32, torch.float32),
    (128, 8, 1, 16, torch.float32),
    (128, 3, 1, 32, torch.bfloat16),
    (64, 8, 1, 32, torch.bfloat16),
    (64, 3, 3, 16, torch.float16),
]
TOLERANCE = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}


def _case(index: int, *, decode: bool) -> tuple[random.Random, dict[str, Any]]:
    head_dim, group, kv_heads, block_size, dtype = CASES[index]
    rng = random.Random(f"{'decode' if decode else 'prefill'}-{index}")
    spec: dict[str, Any] = {
        "num_kv_heads": kv_heads,
        "group": group,
        "head_dim": head_dim,
        "block_size": block_size,
        "dtype": dtype,
    }
    return rng, spec


def _assert_matches(out: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype) -> None:
    assert not out.isnan().any(), "an output element was never written"
    tol = TOLERANCE[dtype]
    torch.testing.assert_close(out.float(), ref.float(), rtol=tol, atol=tol)


def _prefill_oracle(batch: PagedBatch) -> torch.Tensor:
    wide = batch.upcast()
    return prefill_attention_reference(wide.q, wide.k_cache, wide.v_cache, wide.meta)


def _decode_oracle(batch: PagedBatch) -> torch.Tensor:
    wide = batch.upcast()
    return decode_attention_reference(wide.q, wide.k_cache, wide.v_cache, wide.meta)


@pytest.mark.parametrize("index", range(len(CASES)))
def test_prefill_matches_reference_on_ragged_batches(
    index: int, triton_kernels: None, device: torch.device
) -> None:
    rng, spec = _case(index, decode=False)
    q_lens, contexts = random_lengths(rng, rng.randint(1, 8), max_new=300, max_context=200)
    if index == 0:  # one long prompt and one long cached prefix cross many blocks and tiles
        q_lens, contexts = [*q_lens, 300, 37], [*contexts, 0, 200]
    batch = make_paged_batch(
        rng, q_lens=q_lens, contexts=contexts, extra_tokens=2 * (index % 2), **spec
    ).to(device)
    out = torch.full_like(batch.q, float("nan"))
    result = kernels.prefill_attention(batch.q, batch.k_cache, batch.v_cache, batch.meta, out=out)
    assert result is out
    _assert_matches(out, _prefill_oracle(batch), spec["dtype"])


def test_prefill_reads_strided_queries_and_zeroes_rows_of_no_sequence(
    triton_kernels: None, device: torch.device
) -> None:
    rng, spec = _case(1, decode=False)
    # The middle sequence has nothing new this step (a chunked-prefill batch can hold one).
    batch = make_paged_batch(
        rng, q_lens=[5, 0, 17], contexts=[40, 20, 0], extra_tokens=3, **spec
    ).to(device)
    tokens, heads, dim = batch.q.shape
    # q as the head of a fused qkv projection: rows are strided, heads contiguous.
    fused = torch.randn(tokens, (heads + 4) * dim, device=device)
    q = fused[:, : heads * dim].view(tokens, heads, dim)
    assert not q.is_contiguous()
    out = kernels.prefill_attention(q, batch.k_cache, batch.v_cache, batch.meta, scale=0.3)
    ref = prefill_attention_reference(q, batch.k_cache, batch.v_cache, batch.meta, scale=0.3)
    _assert_matches(out, ref, torch.float32)
    assert out[-3:].abs().max() == 0


@pytest.mark.parametrize("index", range(len(CASES)))
def test_decode_matches_reference_on_ragged_batches(
    index: int, triton_kernels: None, device: torch.device
) -> None:
    rng, spec = _case(index, decode=True)
    batch_size = rng.randint(1, 8)
    # Lengths 1..301; 129 leaves an empty split (4 splits of 48 keys in the interpreter).
    contexts = [rng.choice([0, 15, 16, 128, rng.randint(0, 300)]) for _ in range(batch_size)]
    if index == 0:
        contexts += [0, 32, 128, 300]
    batch = make_paged_batch(
        rng, q_lens=[1] * len(contexts), contexts=contexts, decode=True, **spec
    ).to(device)
    out = torch.full_like(batch.q, float("nan"))
    kernels.decode_attention(batch.q, batch.k_cache, batch.v_cache, batch.meta, out=out)
    _assert_matches(out, _decode_oracle(batch), spec["dtype"])


def test_decode_equals_prefill_of_one_token(triton_kernels: None, device: torch.device) -> None:
    rng, spec = _case(1, decode=True)
    batch = make_paged_batch(rng, q_lens=[1, 1, 1], contexts=[0, 70, 200], decode=True, **spec).to(
        device
    )
    decoded = kernels.decode_attention(batch.q, batch.k_cache, batch.v_cache, batch.meta)
    prefilled = kernels.prefill_attention(batch.q, batch.k_cache, batch.v_cache, batch.meta)
    torch.testing.assert_close(decoded, prefilled, rtol=1e-5, atol=1e-5)


def test_decode_padding_rows_give_zeros(triton_kernels: None, device: torch.device) -> None:
    rng, spec = _case(2, decode=True)
    batch = make_paged_batch(rng, q_lens=[1, 1, 1], contexts=[20, 0, 99], decode=True, **spec).to(
        device
    )
    batch.meta.seq_lens[1] = 0  # a CUDA-graph padding row: no keys at all
    out = torch.full_like(batch.q, float("nan"))
    kernels.decode_attention(batch.q, batch.k_cache, batch.v_cache, batch.meta, out=out)
    assert out[1].abs().max() == 0
    _assert_matches(out, _decode_oracle(batch), torch.float32)


def test_references_match_a_token_by_token_softmax() -> None:
    rng, spec = _case(1, decode=False)
    batch = make_paged_batch(rng, q_lens=[3, 1], contexts=[18, 0], **spec)
    out = prefill_attention_reference(batch.q, batch.k_cache, batch.v_cache, batch.meta)
    block_size, group = batch.k_cache.shape[1], batch.q.shape[1] // batch.k_cache.shape[2]
    row = 0
    for seq, (start, seq_len) in enumerate(zip([0, 3], [21, 1], strict=True)):
        q_len = int(batch.meta.cu_seqlens_q[seq + 1]) - start
        slots = [
            (int(batch.meta.block_tables[seq, t // block_size]), t % block_size)
            for t in range(seq_len)
        ]
        keys = torch.stack([batch.k_cache[b, r] for b, r in slots])
        values = torch.stack([batch.v_cache[b, r] for b, r in slots])
        for j in range(q_len):
            visible = seq_len - q_len + j + 1
            for head in range(batch.q.shape[1]):
                k, v = keys[:visible, head // group], values[:visible, head // group]
                weights = torch.softmax(k @ batch.q[row, head] / batch.q.shape[2] ** 0.5, 0)
                torch.testing.assert_close(out[row, head], weights @ v, rtol=1e-5, atol=1e-5)
            row += 1


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_decode_replays_in_a_cuda_graph_with_new_lengths() -> None:
    device = torch.device("cuda")
    rng = random.Random("graph")
    spec = {"num_kv_heads": 3, "group": 3, "head_dim": 64, "block_size": 16}
    batch = make_paged_batch(
        rng, q_lens=[1] * 8, contexts=[500] * 8, decode=True, dtype=torch.bfloat16, **spec
    ).to(device)
    out = torch.empty_like(batch.q)
    args = (batch.q, batch.k_cache, batch.v_cache, batch.meta)
    kernels.decode_attention(*args, out=out)  # compile outside the capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        kernels.decode_attention(*args, out=out)
    for lengths in ([501] * 8, [1, 17, 64, 129, 200, 333, 480, 501]):
        batch.meta.seq_lens.copy_(torch.tensor(lengths, dtype=torch.int32))
        graph.replay()
        torch.cuda.synchronize()
        _assert_matches(out, _decode_oracle(batch), torch.bfloat16)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("group", [3, 7])
def test_long_bf16_batches_on_gpu(group: int) -> None:
    device = torch.device("cuda")
    rng = random.Random(f"gpu-{group}")
    spec = {"num_kv_heads": 2, "group": group, "head_dim": 64, "block_size": 16}
    contexts = [rng.randint(0, 4000) for _ in range(64)]
    batch = make_paged_batch(
        rng, q_lens=[1] * 64, contexts=contexts, decode=True, dtype=torch.bfloat16, **spec
    ).to(device)
    out = kernels.decode_attention(batch.q, batch.k_cache, batch.v_cache, batch.meta)
    _assert_matches(out, _decode_oracle(batch), torch.bfloat16)
    prompts = make_paged_batch(
        rng, q_lens=[2000, 700, 1], contexts=[0, 1500, 3000], dtype=torch.bfloat16, **spec
    ).to(device)
    out = kernels.prefill_attention(prompts.q, prompts.k_cache, prompts.v_cache, prompts.meta)
    _assert_matches(out, _prefill_oracle(prompts), torch.bfloat16)
