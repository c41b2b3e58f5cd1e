"""Kernel benchmark: every kernel's median time, GB/s and TFLOP/s against peaks of the same run.

On CUDA each kernel runs compiled (Triton) at sizes that fill the chip, timed with
`triton.testing.do_bench` (median), beside a peer on the same inputs (torch SDPA/flash for
prefill, our torch references for the rest). Peaks are measured in the same run: a large
device-to-device copy (GB/s) and a large bf16 matmul (TFLOP/s). Without CUDA it times the torch
references at small sizes (what a CPU neuron runs), against a CPU copy and fp32 matmul.

    python benchmarks/bench_kernels.py [--quick] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from cortex.engine import kernels
from cortex.engine.kernels import AttentionMetadata

GPU = torch.cuda.is_available()
DEVICE = torch.device("cuda" if GPU else "cpu")


def median_ms(fn: Callable[[], object], budget_s: float = 1.0) -> float:
    """Median wall time of `fn` in milliseconds: do_bench on CUDA, else repeated runs for
    about `budget_s` (at least 3)."""
    if GPU:
        import triton.testing

        return float(triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median"))
    fn()
    times, deadline = [], time.perf_counter() + budget_s
    while len(times) < 3 or (time.perf_counter() < deadline and len(times) < 50):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


@dataclass
class Bench:
    """Collected rows, and the CPU time budget per measurement."""

    budget_s: float
    rows: list[Row]

    def time(self, fn: Callable[[], object]) -> float:
        return median_ms(fn, self.budget_s)


@dataclass
class Row:
    kernel: str
    shape: str
    ms: float
    bytes_moved: float = 0.0
    flops: float = 0.0
    peer: str = ""
    peer_ms: float = 0.0


def copy_peak() -> float:
    """GB/s (read + write) of a large copy on DEVICE: 2 GiB of bf16 on GPU, 256 MiB on CPU."""
    n = (1 << 30) if GPU else (64 << 20)
    src = torch.empty(n, dtype=torch.bfloat16 if GPU else torch.float32, device=DEVICE)
    dst = torch.empty_like(src)
    return 2 * src.numel() * src.element_size() / median_ms(lambda: dst.copy_(src)) / 1e6


def matmul_peak() -> float:
    """TFLOP/s of a large matmul on DEVICE: 8192^3 bf16 on GPU, 1024^3 fp32 on CPU."""
    m = 8192 if GPU else 1024
    a = torch.randn(m, m, dtype=torch.bfloat16 if GPU else torch.float32, device=DEVICE)
    b = torch.randn_like(a)
    return 2 * m**3 / median_ms(lambda: a @ b) / 1e9


def paged(
    q_lens: list[int],
    contexts: list[int],
    heads: int,
    kv_heads: int,
    head_dim: int,
    dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, AttentionMetadata]:
    """Random q, caches and metadata, blocks handed out in shuffled order (block size 16)."""
    seq_lens = [c + n for c, n in zip(contexts, q_lens, strict=True)]
    per_seq = max(-(-s // 16) for s in seq_lens)
    num_blocks = per_seq * len(seq_lens)
    tables = torch.randperm(num_blocks, device=DEVICE).view(len(seq_lens), per_seq).int()
    k_cache = torch.randn(num_blocks, 16, kv_heads, head_dim, dtype=dtype, device=DEVICE)
    v_cache = torch.randn_like(k_cache)
    q = torch.randn(sum(q_lens), heads, head_dim, dtype=dtype, device=DEVICE)
    cu = torch.tensor([0, *q_lens], device=DEVICE).cumsum(0).int()
    meta = AttentionMetadata(
        is_decode=all(n == 1 for n in q_lens),
        slot_mapping=torch.zeros(sum(q_lens), dtype=torch.int64, device=DEVICE),
        cu_seqlens_q=cu,
        seq_lens=torch.tensor(seq_lens, dtype=torch.int32, device=DEVICE),
        block_tables=tables,
        max_seqlen_q=max(q_lens),
        max_seqlen_k=max(seq_lens),
    )
    return q, k_cache, v_cache, meta


def bench_store(
    bench: Bench, tokens: int, kv_heads: int, head_dim: int, dtype: torch.dtype
) -> None:
    key = torch.randn(tokens, kv_heads, head_dim, dtype=dtype, device=DEVICE)
    value = torch.randn_like(key)
    cache = torch.empty(tokens // 16 + 1, 16, kv_heads, head_dim, dtype=dtype, device=DEVICE)
    v_cache = torch.empty_like(cache)
    slots = torch.randperm(tokens, device=DEVICE)
    ms = bench.time(lambda: kernels.store_kv(key, value, cache, v_cache, slots))
    peer = bench.time(lambda: kernels.store_kv_reference(key, value, cache, v_cache, slots))
    moved = 4 * key.numel() * key.element_size()
    shape = f"{tokens} tok x {kv_heads}x{head_dim}"
    bench.rows.append(Row("store_kv", shape, ms, moved, 0.0, "torch index_copy_", peer))


def bench_prefill(
    bench: Bench, seqs: int, new: int, context: int, heads: int, kv_heads: int, dim: int,
    dtype: torch.dtype,
) -> None:  # fmt: skip
    q, k_cache, v_cache, meta = paged([new] * seqs, [context] * seqs, heads, kv_heads, dim, dtype)
    ms = bench.time(lambda: kernels.prefill_attention(q, k_cache, v_cache, meta))
    visible = seqs * (new * context + new * (new + 1) / 2)  # (query, key) pairs
    flops = 4 * visible * heads * dim
    moved = (q.numel() * 2 + 2 * seqs * (new + context) * kv_heads * dim) * q.element_size()
    # Peer: torch SDPA (flash on CUDA when causal) on the same problem in dense tensors; with a
    # cached prefix the causal diagonal is offset, which needs an explicit mask.
    dense_q = torch.randn(seqs, heads, new, dim, dtype=dtype, device=DEVICE)
    dense_kv = torch.randn(seqs, kv_heads, context + new, dim, dtype=dtype, device=DEVICE)
    positions = torch.arange(context + new, device=DEVICE)
    mask = None if context == 0 else positions <= context + positions[:new, None]
    peer_name = "torch SDPA, dense K/V"
    peer = bench.time(
        lambda: F.scaled_dot_product_attention(
            dense_q,
            dense_kv,
            dense_kv,
            attn_mask=mask,
            is_causal=context == 0,
            enable_gqa=heads != kv_heads,
        )
    )
    shape = f"{seqs}x({context}+{new}) H{heads}/{kv_heads} D{dim}"
    bench.rows.append(Row("prefill_attention", shape, ms, moved, flops, peer_name, peer))


def bench_decode(
    bench: Bench, seqs: int, context: int, heads: int, kv_heads: int, dim: int,
    dtype: torch.dtype,
) -> None:  # fmt: skip
    q, k_cache, v_cache, meta = paged([1] * seqs, [context - 1] * seqs, heads, kv_heads, dim, dtype)
    ms = bench.time(lambda: kernels.decode_attention(q, k_cache, v_cache, meta))
    # Peer: torch SDPA over the same keys stored densely (no block table to follow).
    dense_q = q.unsqueeze(2)
    dense_kv = torch.randn(seqs, kv_heads, context, dim, dtype=dtype, device=DEVICE)
    peer = bench.time(
        lambda: F.scaled_dot_product_attention(
            dense_q, dense_kv, dense_kv, enable_gqa=heads != kv_heads
        )
    )
    moved = 2 * seqs * context * kv_heads * dim * q.element_size()
    flops = 4 * seqs * context * heads * dim
    shape = f"{seqs}x{context} H{heads}/{kv_heads} D{dim}"
    bench.rows.append(
        Row("decode_attention", shape, ms, moved, flops, "torch SDPA, dense K/V", peer)
    )


def bench_sample(bench: Bench, batch: int, vocab: int, mode: str) -> None:
    logits = torch.randn(batch, vocab, device=DEVICE) * 4
    settings = {
        "greedy": (0.0, 0, 1.0),
        "temperature": (0.8, 0, 1.0),
        "top-k 50": (0.8, 50, 1.0),
        "top-p 0.9": (0.8, 0, 0.9),
    }[mode]

    def full(value: float, dtype: torch.dtype) -> torch.Tensor:
        return torch.full((batch,), value, dtype=dtype, device=DEVICE)

    params = (
        full(settings[0], torch.float32),
        full(settings[1], torch.int64),
        full(settings[2], torch.float32),
        full(0.0, torch.float32),
        torch.arange(batch, device=DEVICE),
        full(7, torch.int64),
    )
    ms = bench.time(lambda: kernels.sample(logits, *params))
    if mode == "greedy":
        peer_name, peer = "torch argmax", bench.time(lambda: logits.argmax(dim=-1))
    else:
        peer_name = "softmax/sort + multinomial"
        peer = bench.time(lambda: naive_sample(logits, *settings))
    moved = logits.numel() * 4  # one read of the logits; the search re-reads from cache
    bench.rows.append(Row("sample", f"{batch}x{vocab} {mode}", ms, moved, 0.0, peer_name, peer))


def naive_sample(
    logits: torch.Tensor, temperature: float, top_k: int, top_p: float
) -> torch.Tensor:
    """The usual torch sampler (gpt-fast / vLLM-native style), unseeded: the peer."""
    x = logits / temperature
    if top_k:
        kth = x.topk(top_k, dim=-1).values[:, -1:]
        x = x.masked_fill(x < kth, float("-inf"))
    if top_p < 1:
        ordered, index = x.sort(dim=-1, descending=True)
        mass = ordered.softmax(dim=-1).cumsum(dim=-1)
        drop = (mass - ordered.softmax(dim=-1)) > top_p
        x = x.scatter(-1, index, ordered.masked_fill(drop, float("-inf")))
    return torch.multinomial(x.softmax(dim=-1), 1).squeeze(-1)


def run(quick: bool) -> list[Row]:
    bench = Bench(0.2 if quick else 1.0, [])
    if GPU:
        bf16 = torch.bfloat16
        bench_store(bench, 65536, 8, 128, bf16)
        bench_prefill(bench, 16, 2048, 0, 32, 8, 128, bf16)
        bench_prefill(bench, 8, 1024, 0, 9, 3, 64, bf16)  # SmolLM2-135M heads
        bench_prefill(bench, 16, 512, 1536, 32, 8, 128, bf16)  # extend over a cached prefix
        for seqs, context in ((1, 4096), (16, 2048), (64, 4096), (256, 4096)):
            bench_decode(bench, seqs, context, 32, 8, 128, bf16)
        for seqs in (1, 64):
            bench_decode(bench, seqs, 2048, 9, 3, 64, bf16)
        for batch in (1, 64) if quick else (1, 64, 256):
            for mode in ("greedy", "temperature", "top-k 50", "top-p 0.9"):
                bench_sample(bench, batch, 49152, mode)
        if not quick:
            bench_sample(bench, 64, 151936, "top-p 0.9")  # Qwen2.5's vocabulary
    else:
        fp32 = torch.float32
        bench_store(bench, 1024, 3, 64, fp32)
        bench_prefill(bench, 1, 512, 0, 9, 3, 64, fp32)
        bench_prefill(bench, 4, 128, 256, 9, 3, 64, fp32)
        for seqs in (1, 8):
            bench_decode(bench, seqs, 512, 9, 3, 64, fp32)
        for mode in ("greedy", "temperature", "top-k 50", "top-p 0.9"):
            bench_sample(bench, 1 if quick else 8, 49152, mode)
    return bench.rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="fewer sampling shapes, shorter CPU measurements"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.pop("CORTEX_KERNELS", None)  # CUDA tensors -> Triton, CPU tensors -> torch
    copy_gbs, matmul_tflops = copy_peak(), matmul_peak()
    rows = run(args.quick)
    if GPU:
        name = torch.cuda.get_device_name()
        print(f"{name}, torch {torch.__version__}, Triton kernels compiled; do_bench medians")
    else:
        print(
            f"no CUDA: reference timings only (torch {torch.__version__} on CPU, "
            f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f})"
        )
    print(
        f"peaks this run: copy {copy_gbs:,.0f} GB/s, matmul {matmul_tflops:,.1f} TFLOP/s "
        f"({'bf16' if GPU else 'fp32'})"
    )
    print()
    print(
        "| kernel | shape | median µs | GB/s | % copy | TFLOP/s | % matmul | peer "
        "| peer µs | speed-up |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---|---:|---:|")
    for r in rows:
        gbs = r.bytes_moved / r.ms / 1e6
        tflops = r.flops / r.ms / 1e9
        tf_cells = f"{tflops:.2f} | {100 * tflops / matmul_tflops:.0f}%" if r.flops else " | "
        print(
            f"| {r.kernel} | {r.shape} | {r.ms * 1e3:,.1f} | {gbs:,.0f} | "
            f"{100 * gbs / copy_gbs:.0f}% | {tf_cells} | {r.peer} | {r.peer_ms * 1e3:,.1f} | "
            f"{r.peer_ms / r.ms:.2f}x |"
        )
    print()
    print("command: python " + " ".join([sys.argv[0], *sys.argv[1:]]))


if __name__ == "__main__":
    main()
