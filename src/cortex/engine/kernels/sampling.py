"""Triton sampling: per-row temperature, min-p, top-k, top-p and seed, without sorting the vocab.

One program per row walks the vocabulary in tiles:

1. One pass takes the maximum, its first index and the minimum. Greedy rows (temperature <= 0)
   stop here with the argmax.
2. min-p is a closed-form threshold on the scaled logits `x = logits / T`:
   `x >= max(x) + log(min_p)` is `p >= min_p * p_max`.
3. top-k and top-p thresholds are found by a threshold search, not a sort. Floats are mapped to
   order-preserving int32 keys; each pass tests NUM_PIVOTS evenly spaced keys of the current
   interval at once (count of tokens at or above each, or their probability mass), so the
   exact cut-off value (the k-th largest value; the smallest value whose tail mass reaches
   top_p on the top-k/min-p set) is pinned in about 32 / log2(NUM_PIVOTS + 1) = 8 passes.
   Ties at a cut are kept, as in `reference.kept_mask`.
4. A last pass draws by Gumbel-max, `argmax over kept tokens of x + g`, with
   `g = -log(-log(u))` and `u` from Philox keyed by the row's seed, counting (token // 4,
   step) and taking word token % 4 (`reference.gumbel_noise`). The draw is a pure function of
   (seed, step, logits row), and its uniforms are bit-identical to the torch reference's.

Cost: 2 passes for plain temperature sampling, about 10 with top-k, 20 with top-p, all from
L1/L2 since a row is at most a few hundred KB. One program per row: a batch of one uses one SM.
"""

# Triton's @jit functions take untyped tensors/pointers; the Python launchers stay typed.
# mypy: disallow-untyped-defs=False, disallow-incomplete-defs=False

from __future__ import annotations

import torch
import triton
import triton.language as tl

from cortex.engine.kernels.checks import check_sample
from cortex.engine.kernels.tuning import sample_config

__all__ = ["kept_mask_triton", "ordered_key", "sample_triton"]

_INT32_MIN = -2147483648


@triton.jit
def _ordered_key(x):
    """float32 -> int32 with the same order (negative floats get their low 31 bits flipped)."""
    bits = x.to(tl.int32, bitcast=True)
    return bits ^ ((bits >> 31) & 0x7FFFFFFF)


@triton.jit
def _load_scaled(row_ptr, start, vocab, temperature, BLOCK_V: tl.constexpr):
    """Tile of x = logits / temperature, its int32 keys (as `_ordered_key`), and the mask."""
    offs = start + tl.arange(0, BLOCK_V)
    ok = offs < vocab
    x = tl.load(row_ptr + offs, mask=ok, other=float("-inf")).to(tl.float32) / temperature
    bits = x.to(tl.int32, bitcast=True)  # inlined: each nested call costs the interpreter
    key = tl.where(ok, bits ^ ((bits >> 31) & 0x7FFFFFFF), _INT32_MIN)
    return offs, ok, x, key


@triton.jit
def _mass_at_or_above(row_ptr, vocab, temperature, x_max, floor_key, BLOCK_V: tl.constexpr):
    """Sum of exp(x - x_max) over tokens whose key is >= floor_key."""
    total = tl.full((), 0.0, tl.float32)
    for start in range(0, vocab, BLOCK_V):
        _, _, x, key = _load_scaled(row_ptr, start, vocab, temperature, BLOCK_V)
        total += tl.sum(tl.where(key >= floor_key, tl.exp(x - x_max), 0.0), 0)
    return total


@triton.jit
def _search_threshold(
    row_ptr, vocab, temperature, x_max, floor_key, lo, hi, target,
    MASS: tl.constexpr, BLOCK_V: tl.constexpr, NUM_PIVOTS: tl.constexpr,
):  # fmt: skip
    """Largest key t in [lo, hi) with measure(key >= t) >= target, where measure is the token
    count (MASS=False) or the mass exp(x - x_max) of tokens with key >= floor_key (MASS=True).
    Expects measure(lo) >= target > measure(hi); each pass cuts the interval NUM_PIVOTS+1 ways.
    """
    lo = lo.to(tl.int64)
    hi = hi.to(tl.int64)
    steps = (tl.arange(0, NUM_PIVOTS) + 1).to(tl.int64)
    while hi - lo > 1:
        pivots64 = lo + ((hi - lo) * steps) // (NUM_PIVOTS + 1)
        pivots = pivots64.to(tl.int32)
        measure = tl.full([NUM_PIVOTS], 0.0, tl.float32)
        for start in range(0, vocab, BLOCK_V):
            _, _, x, key = _load_scaled(row_ptr, start, vocab, temperature, BLOCK_V)
            above = key[None, :] >= pivots[:, None]  # (NUM_PIVOTS, BLOCK_V)
            if MASS:
                weight = tl.where(key >= floor_key, tl.exp(x - x_max), 0.0)
                measure += tl.sum(tl.where(above, weight[None, :], 0.0), 1)
            else:
                measure += tl.sum(above.to(tl.float32), 1)
        good = measure >= target
        lo = tl.max(tl.where(good, pivots64, lo), 0)
        hi = tl.min(tl.where(good, hi, pivots64), 0)
    return lo.to(tl.int32)


@triton.jit
def _gumbel(seed, step, offs):
    """Noise of tokens `offs`: word offs % 4 of Philox4x32-10 keyed by the seed, counting
    (offs // 4, step_lo, step_hi, 0); the rounds of `tl.philox`, written out for the torch twin.
    """
    c0 = (offs // 4).to(tl.uint32)
    c1 = c0 * 0 + step.to(tl.uint32)  # int64 -> uint32 truncates: the low word
    c2 = c0 * 0 + (step >> 32).to(tl.uint32)
    c3 = c0 * 0
    k0 = seed.to(tl.uint32)
    k1 = (seed >> 32).to(tl.uint32)
    for _ in tl.static_range(10):  # wrapping uint32 arithmetic, as in tl.philox
        c0, c1, c2, c3 = (
            tl.umulhi(0xCD9E8D57, c2) ^ c1 ^ k0,
            tl.mul(c2, 0xCD9E8D57, sanitize_overflow=False),
            tl.umulhi(0xD2511F53, c0) ^ c3 ^ k1,
            tl.mul(c0, 0xD2511F53, sanitize_overflow=False),
        )
        k0 = tl.add(k0, 0x9E3779B9, sanitize_overflow=False)
        k1 = tl.add(k1, 0xBB67AE85, sanitize_overflow=False)
    word = offs % 4
    bits = tl.where(word == 0, c0, tl.where(word == 1, c1, tl.where(word == 2, c2, c3)))
    uniform = ((bits >> 9).to(tl.float32) + 0.5) * (1.0 / 8388608.0)  # 23 bits, inside (0, 1)
    return -tl.log(-tl.log(uniform))


@triton.jit
def _sample_kernel(
    logits_ptr, stride_row, temperature_ptr, top_k_ptr, top_p_ptr, min_p_ptr, seeds_ptr,
    steps_ptr, out_ptr, threshold_ptr, vocab,
    BLOCK_V: tl.constexpr, NUM_PIVOTS: tl.constexpr, WRITE_THRESHOLD: tl.constexpr,
):  # fmt: skip
    row = tl.program_id(0)
    row_ptr = logits_ptr + row.to(tl.int64) * stride_row
    # Pass 1 on the raw logits: maximum with its first index (greedy), and minimum.
    best = tl.full((), float("-inf"), tl.float32)
    best_idx = tl.full((), 0, tl.int32)
    low = tl.full((), float("inf"), tl.float32)
    for start in range(0, vocab, BLOCK_V):
        offs = start + tl.arange(0, BLOCK_V)
        ok = offs < vocab
        logit = tl.load(row_ptr + offs, mask=ok, other=float("-inf")).to(tl.float32)
        tile_max = tl.max(logit, 0)
        tile_idx = tl.min(tl.where(ok & (logit == tile_max), offs, vocab), 0)
        best_idx = tl.where(tile_max > best, tile_idx, best_idx)
        best = tl.maximum(best, tile_max)
        low = tl.minimum(low, tl.min(tl.where(ok, logit, float("inf")), 0))
    token = best_idx
    temperature = tl.load(temperature_ptr + row).to(tl.float32)
    if temperature > 0:
        x_max = best / temperature
        # A row without a finite logit has nothing to weigh: measure from 0 instead of -inf.
        x_ref = tl.where(x_max > float("-inf"), x_max, 0.0)
        floor_key = _ordered_key(tl.full((), float("-inf"), tl.float32))
        min_p = tl.load(min_p_ptr + row).to(tl.float32)
        if min_p > 0:
            floor_key = _ordered_key(x_max + tl.log(min_p))
        top_k = tl.load(top_k_ptr + row).to(tl.int32)
        if (top_k > 0) & (top_k < vocab):
            kth = _search_threshold(
                row_ptr, vocab, temperature, x_ref, floor_key,
                _ordered_key(low / temperature), _ordered_key(x_max).to(tl.int64) + 1,
                top_k.to(tl.float32), False, BLOCK_V, NUM_PIVOTS,
            )  # fmt: skip
            floor_key = tl.maximum(floor_key, kth)
        top_p = tl.load(top_p_ptr + row).to(tl.float32)
        if top_p < 1:
            kept_mass = _mass_at_or_above(row_ptr, vocab, temperature, x_ref, floor_key, BLOCK_V)
            cut = _search_threshold(
                row_ptr, vocab, temperature, x_ref, floor_key,
                floor_key, _ordered_key(x_max).to(tl.int64) + 1,
                top_p * kept_mass, True, BLOCK_V, NUM_PIVOTS,
            )  # fmt: skip
            floor_key = tl.maximum(floor_key, cut)
        if WRITE_THRESHOLD:  # for tests of the kept set: keys >= floor_key survive
            tl.store(threshold_ptr + row, floor_key)
        # Last pass: Gumbel-max over the kept tokens, first index on ties.
        seed = tl.load(seeds_ptr + row).to(tl.int64)
        step = tl.load(steps_ptr + row).to(tl.int64)
        draw = tl.full((), float("-inf"), tl.float32)
        draw_idx = tl.full((), 0, tl.int32)
        for start in range(0, vocab, BLOCK_V):
            offs, ok, x, key = _load_scaled(row_ptr, start, vocab, temperature, BLOCK_V)
            score = tl.where(key >= floor_key, x + _gumbel(seed, step, offs), float("-inf"))
            tile_max = tl.max(score, 0)
            tile_idx = tl.min(tl.where(ok & (score == tile_max), offs, vocab), 0)
            draw_idx = tl.where(tile_max > draw, tile_idx, draw_idx)
            draw = tl.maximum(draw, tile_max)
        token = tl.where(draw > float("-inf"), draw_idx, best_idx)
    tl.store(out_ptr + row, token.to(tl.int64))


def sample_triton(
    logits: torch.Tensor,
    temperature: torch.Tensor,
    top_k: torch.Tensor,
    top_p: torch.Tensor,
    min_p: torch.Tensor,
    seeds: torch.Tensor,
    steps: torch.Tensor,
    *,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Triton `sample`; same contract as `reference.sample_reference`.

    Args:
        out: optional (rows,) int64 buffer for the tokens (e.g. a CUDA graph's static buffer).
    """
    check_sample(logits, temperature, top_k, top_p, min_p, seeds, steps)
    rows = logits.shape[0]
    if out is None:
        out = torch.empty(rows, dtype=torch.int64, device=logits.device)
    elif out.shape != (rows,) or out.dtype != torch.int64 or out.device != logits.device:
        raise ValueError(f"out must be ({rows},) int64 on {logits.device}")
    if rows == 0:
        return out
    _launch(logits, (temperature, top_k, top_p, min_p, seeds, steps), out, None)
    return out


def _launch(
    logits: torch.Tensor,
    params: tuple[torch.Tensor, ...],
    out: torch.Tensor,
    thresholds: torch.Tensor | None,
) -> None:
    rows, vocab = logits.shape
    cfg = sample_config(vocab)
    _sample_kernel[(rows,)](
        logits, logits.stride(0), *(t.contiguous() for t in params), out,
        out if thresholds is None else thresholds, vocab,
        BLOCK_V=cfg.block_v, NUM_PIVOTS=cfg.num_pivots, WRITE_THRESHOLD=thresholds is not None,
        num_warps=cfg.num_warps,
    )  # fmt: skip


def ordered_key(x: torch.Tensor) -> torch.Tensor:
    """The kernel's order-preserving float32 -> int32 map, in torch."""
    bits = x.float().contiguous().view(torch.int32)
    return bits ^ ((bits >> 31) & 0x7FFFFFFF)


def kept_mask_triton(
    logits: torch.Tensor,
    temperature: torch.Tensor,
    top_k: torch.Tensor,
    top_p: torch.Tensor,
    min_p: torch.Tensor,
) -> torch.Tensor:
    """The kernel's kept set (min-p, top-k, top-p) for rows with temperature > 0.

    Runs the sampling kernel with its threshold output on; the twin of `reference.kept_mask`
    applied to `logits / temperature`, for tests and debugging.

    Returns:
        (rows, vocab) bool mask; rows with temperature <= 0 are all False.
    """
    rows = logits.shape[0]
    zeros = torch.zeros(rows, dtype=torch.int64, device=logits.device)
    check_sample(logits, temperature, top_k, top_p, min_p, zeros, zeros)
    thresholds = torch.full((rows,), 2**31 - 1, dtype=torch.int32, device=logits.device)
    tokens = torch.empty(rows, dtype=torch.int64, device=logits.device)
    if rows:
        _launch(logits, (temperature, top_k, top_p, min_p, zeros, zeros), tokens, thresholds)
    keys = ordered_key(logits.float() / temperature[:, None].float())
    return (keys >= thresholds[:, None]) & (temperature > 0)[:, None]
