"""Launch configurations of the Triton kernels: small tiles in the interpreter, GPU tiles else.

No `@triton.autotune`: it would benchmark configs in the interpreter (pointless and slow) and it
re-tunes on new shapes during CUDA-graph capture. The GPU numbers are first guesses from the
designs docs/kernels.md describes, to be tuned with `benchmarks/bench_kernels.py` on a real device.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

__all__ = [
    "DecodeConfig",
    "PrefillConfig",
    "SampleConfig",
    "decode_config",
    "interpreting",
    "next_power_of_2",
    "prefill_config",
    "sample_config",
]

# tl.dot needs every dimension >= 16 when compiled (the interpreter accepts less, so a smaller
# tile would pass CPU tests and fail on the GPU).
MIN_DOT = 16


def interpreting() -> bool:
    """Whether Triton kernels run in the interpreter (`TRITON_INTERPRET=1`)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def next_power_of_2(n: int) -> int:
    """The smallest power of two >= n (1 for n <= 1)."""
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


@dataclass(frozen=True)
class PrefillConfig:
    """Tiles of the prefill kernel: BLOCK_M rows = BLOCK_Q query tokens x the GQA group."""

    block_m: int
    block_q: int
    tile_n: int
    num_warps: int
    num_stages: int


@dataclass(frozen=True)
class DecodeConfig:
    """Split-KV decode: up to max_splits segments per sequence, each >= min_split_len keys."""

    block_h: int
    tile_n: int
    max_splits: int
    min_split_len: int
    num_warps: int
    num_stages: int


@dataclass(frozen=True)
class SampleConfig:
    """Sampling: vocabulary tiles of block_v and num_pivots thresholds tested per search pass."""

    block_v: int
    num_pivots: int
    num_warps: int


def prefill_config(group: int, head_dim: int) -> PrefillConfig:
    """Tiles for a GQA group of `group` query heads per KV head."""
    if interpreting():
        # Each program and each tile costs Python time, so the interpreter wants big tiles too.
        block_m, tile_n, warps, stages = max(64, next_power_of_2(group)), 32, 1, 1
    else:
        block_m = max(64 if head_dim <= 128 else 32, next_power_of_2(group))
        tile_n, warps, stages = (64 if head_dim <= 64 else 32), 4, 2
    return PrefillConfig(block_m, block_m // group, tile_n, warps, stages)


def _multiprocessors(device: torch.device) -> int:
    if device.type != "cuda":
        return 8
    return int(torch.cuda.get_device_properties(device).multi_processor_count)


def decode_config(
    num_seqs: int, num_kv_heads: int, group: int, device: torch.device
) -> DecodeConfig:
    """Split count from the batch shape only (never from sequence lengths), so a CUDA graph
    captured for a batch size stays valid whatever the lengths."""
    block_h = max(MIN_DOT, next_power_of_2(group))
    if interpreting():
        return DecodeConfig(block_h, MIN_DOT, 4, 32, 1, 1)
    # Aim for about two programs per SM; short sequences use fewer splits by themselves.
    wanted = -(-2 * _multiprocessors(device) // max(1, num_seqs * num_kv_heads))
    max_splits = min(32, next_power_of_2(wanted))
    return DecodeConfig(block_h, 32, max_splits, 128, 4, 2)


def sample_config(vocab_size: int) -> SampleConfig:
    """Vocabulary tile and pivot count of the sampling kernel."""
    if interpreting():
        # Interpreted tiles and passes cost Python time, not bandwidth: real vocabularies get
        # big tiles and more pivots per pass; small test vocabularies still span several tiles.
        block_v = min(next_power_of_2(vocab_size), 1024 if vocab_size <= 8192 else 8192)
        return SampleConfig(block_v, max(16, min(4096, 2**17 // block_v)), 1)
    return SampleConfig(256, 16, 4)
