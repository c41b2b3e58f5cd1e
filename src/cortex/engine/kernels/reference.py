"""Pure-torch references of the kernels: the CPU backend in production and the oracle in tests.

Each function has the signature and semantics of its Triton twin (`kv_store.py`, `attention.py`,
`sampling.py`). They are written for CPU speed too: K/V blocks are gathered with one indexing
op, attention runs in `scaled_dot_product_attention`, sampling is vectorised over rows.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cortex.engine.kernels.metadata import AttentionMetadata

__all__ = [
    "decode_attention_reference",
    "gumbel_noise",
    "kept_mask",
    "philox4x32",
    "prefill_attention_reference",
    "sample_reference",
    "store_kv_reference",
]

_MASK32 = 0xFFFFFFFF
# Widest gap between a kept token and the row maximum that Gumbel noise can still bridge.
_GUMBEL_REACH = 20.0
# Philox4x32-10 constants, exactly those of triton.language.random.
_PHILOX_KEY_A = 0x9E3779B9
_PHILOX_KEY_B = 0xBB67AE85
_PHILOX_ROUND_A = 0xD2511F53
_PHILOX_ROUND_B = 0xCD9E8D57


def store_kv_reference(
    key: torch.Tensor,
    value: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
) -> None:
    """Write new keys and values into their cache slots; slot -1 means skip that token.

    Args:
        key: (tokens, kv_heads, head_dim) new keys.
        value: (tokens, kv_heads, head_dim) new values.
        k_cache: (num_blocks, block_size, kv_heads, head_dim), contiguous; written in place.
        v_cache: same layout as `k_cache`.
        slot_mapping: (tokens,) integer slot `block * block_size + row` per token, or -1.
    """
    valid = slot_mapping >= 0
    slots = slot_mapping[valid].long()
    k_cache.view(-1, *k_cache.shape[2:]).index_copy_(0, slots, key[valid])
    v_cache.view(-1, *v_cache.shape[2:]).index_copy_(0, slots, value[valid])


def _gather_blocks(cache: torch.Tensor, blocks: torch.Tensor) -> torch.Tensor:
    # (..., n_blocks) block ids -> (..., n_blocks * block_size, kv_heads, head_dim), contiguous;
    # index_select is about 1.5x faster than advanced indexing on CPU.
    picked = cache.index_select(0, blocks.reshape(-1).long())
    return picked.view(*blocks.shape[:-1], -1, *cache.shape[2:])


def prefill_attention_reference(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    meta: AttentionMetadata,
    scale: float | None = None,
    *,
    out: torch.Tensor | None = None,
    window: int | None = None,
) -> torch.Tensor:
    """Causal attention of each sequence's new tokens over its whole paged context.

    Sequence `i` owns query rows `cu_seqlens_q[i]:cu_seqlens_q[i+1]`, which are the last `q_len`
    of its `seq_lens[i]` tokens: query `j` sees keys `0 .. seq_len - q_len + j`. Heads share
    K/V in groups of `heads // kv_heads` (GQA). Rows not owned by any sequence come back zero.

    Args:
        q: (tokens, heads, head_dim) queries.
        k_cache: (num_blocks, block_size, kv_heads, head_dim) keys, new ones already stored.
        v_cache: same layout as `k_cache`.
        meta: the step's paged-KV description.
        scale: softmax scale; `head_dim ** -0.5` when None.
        out: optional buffer of the result's shape and dtype to write into; returned.
        window: sliding window: query `j` sees only keys after `seq_len - q_len + j - window`.

    Returns:
        (tokens, heads, head_dim) attention output in `q.dtype`.
    """
    num_heads, head_dim = q.shape[1], q.shape[2]
    block_size, num_kv_heads = k_cache.shape[1], k_cache.shape[2]
    scale = head_dim**-0.5 if scale is None else scale
    out = torch.zeros_like(q) if out is None else out.zero_()
    cu_seqlens = meta.cu_seqlens_q.tolist()
    for i, seq_len in enumerate(meta.seq_lens.tolist()):
        start, end = cu_seqlens[i], cu_seqlens[i + 1]
        q_len = end - start
        if q_len == 0:
            continue
        context_len = seq_len - q_len
        blocks = meta.block_tables[i, : -(-seq_len // block_size)].long()
        k = _gather_blocks(k_cache, blocks)[:seq_len].transpose(0, 1)  # (kv_heads, seq, dim)
        v = _gather_blocks(v_cache, blocks)[:seq_len].transpose(0, 1)
        mask = None
        if context_len > 0 or (window is not None and window < seq_len):
            positions = torch.arange(seq_len, device=q.device)
            query_positions = context_len + positions[:q_len, None]
            mask = positions <= query_positions
            if window is not None:
                mask &= positions > query_positions - window
        # 4-D inputs (a batch of one) take torch's fused CPU kernel; 3-D ones fall back to the
        # unfused math path, which is about 8x slower on a 1k-token prompt.
        o = F.scaled_dot_product_attention(
            q[start:end].transpose(0, 1)[None],  # (1, heads, q_len, dim)
            k[None],
            v[None],
            attn_mask=mask,
            is_causal=mask is None,
            scale=scale,
            enable_gqa=num_heads != num_kv_heads,
        )[0]
        out[start:end] = o.transpose(0, 1)
    return out


def decode_attention_reference(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    meta: AttentionMetadata,
    scale: float | None = None,
    *,
    out: torch.Tensor | None = None,
    window: int | None = None,
) -> torch.Tensor:
    """Attention of each sequence's one new token over all of its `seq_lens[i]` cached tokens.

    Args:
        q: (num_seqs, heads, head_dim), one query per sequence.
        k_cache: (num_blocks, block_size, kv_heads, head_dim) keys, new ones already stored.
        v_cache: same layout as `k_cache`.
        meta: the step's paged-KV description; a sequence with `seq_len == 0` (batch padding)
            gets a zero output.
        scale: softmax scale; `head_dim ** -0.5` when None.
        out: optional buffer of the result's shape and dtype to write into; returned.
        window: sliding window: only the last `window` of a sequence's keys are seen.

    Returns:
        (num_seqs, heads, head_dim) attention output in `q.dtype`.
    """
    num_heads, head_dim = q.shape[1], q.shape[2]
    block_size, num_kv_heads = k_cache.shape[1], k_cache.shape[2]
    scale = head_dim**-0.5 if scale is None else scale
    max_blocks = min(-(-meta.max_seqlen_k // block_size), meta.block_tables.shape[1])
    max_blocks = max(max_blocks, 1)
    tables = meta.block_tables[:, :max_blocks].long()
    seq_lens = meta.seq_lens.to(q.device).long()
    num_keys = max_blocks * block_size
    key_positions = torch.arange(num_keys, device=q.device)
    visible = key_positions < seq_lens[:, None]  # (seqs, keys)
    k = _gather_blocks(k_cache, tables)  # (seqs, keys, kv_heads, dim)
    v = _gather_blocks(v_cache, tables)
    # Slots past a sequence's end hold whatever the cache held (maybe NaN): zero them, since
    # a masked score still multiplies its value by 0 and NaN * 0 is NaN. On CPU only those
    # slots are touched (batches of similar lengths pay next to nothing); on CUDA a masked
    # fill avoids the host sync, so the reference can be captured in a CUDA graph.
    hidden = ~visible.flatten()
    if q.is_cuda:
        k.masked_fill_(hidden.view(*visible.shape, 1, 1), 0)
        v.masked_fill_(hidden.view(*visible.shape, 1, 1), 0)
    elif bool(hidden.any()):
        k.view(-1, *k.shape[2:])[hidden] = 0
        v.view(-1, *v.shape[2:])[hidden] = 0
    k, v = k.transpose(1, 2), v.transpose(1, 2)  # (seqs, kv_heads, keys, dim)
    if window is not None:
        # Keys out of the window stay finite (they are in the sequence); only the mask drops them.
        visible &= key_positions >= seq_lens[:, None] - window
    # A padding row sees nothing; let it see key 0 so softmax stays finite, then zero it.
    visible[:, 0] |= seq_lens == 0
    o = F.scaled_dot_product_attention(
        q.unsqueeze(2),  # (seqs, heads, 1, dim)
        k,
        v,
        attn_mask=visible[:, None, None, :],
        scale=scale,
        enable_gqa=num_heads != num_kv_heads,
    ).squeeze(2)
    o = torch.where((seq_lens > 0)[:, None, None], o, torch.zeros((), dtype=o.dtype))
    return o if out is None else out.copy_(o)


def _mul_hi_lo(a: int, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # The 64-bit product of a 32-bit constant and 32-bit values, split into its high and low
    # words. int64 multiplication wraps modulo 2**64 (two's complement) in torch's CPU and
    # CUDA kernels, so the low 64 bits, and with them both words, come out exact;
    # `test_philox_matches_the_random123_known_answer` guards this.
    product = b * a
    return (product >> 32).bitwise_and_(_MASK32), product.bitwise_and_(_MASK32)


def philox4x32(
    seeds: torch.Tensor, c0: torch.Tensor, c1: torch.Tensor, c2: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Philox4x32-10 bit-exactly as Triton's `tl.philox(seed, c0, c1, c2, 0)`.

    Args:
        seeds: int64 keys, broadcastable against the counters.
        c0, c1, c2: int64 tensors holding 32-bit counter words (c3 is 0).

    Returns:
        The four output words, int64 tensors of 32-bit values.
    """
    k0 = seeds & _MASK32
    k1 = (seeds >> 32) & _MASK32
    shape = torch.broadcast_shapes(c0.shape, c1.shape, c2.shape)  # type: ignore[no-untyped-call]
    c0, c1, c2 = ((c & _MASK32).expand(shape) for c in (c0, c1, c2))
    c3 = torch.zeros_like(c0)
    for _ in range(10):
        hi_b, lo_b = _mul_hi_lo(_PHILOX_ROUND_B, c2)
        hi_a, lo_a = _mul_hi_lo(_PHILOX_ROUND_A, c0)
        c0, c1, c2, c3 = hi_b.bitwise_xor_(c1).bitwise_xor_(k0), lo_b, hi_a ^ c3 ^ k1, lo_a
        k0 = (k0 + _PHILOX_KEY_A) & _MASK32
        k1 = (k1 + _PHILOX_KEY_B) & _MASK32
    return c0, c1, c2, c3


def _bits_to_gumbel(bits: torch.Tensor) -> torch.Tensor:
    uniform = ((bits >> 9).to(torch.float32) + 0.5) * (2.0**-23)
    return -torch.log(-torch.log(uniform))


def gumbel_noise(
    seeds: torch.Tensor, steps: torch.Tensor, vocab_size: int, tokens: torch.Tensor | None = None
) -> torch.Tensor:
    """Gumbel(0, 1) noise per (row, token), a pure function of (seed, step, token index).

    Token `t` takes word `t % 4` of `philox(seed; t // 4, step_lo, step_hi, 0)`, and the uniform
    is `((word >> 9) + 0.5) / 2**23`: 23 random bits, exact in float32 and strictly inside
    (0, 1). The uniforms are therefore bit-identical to the Triton kernel's; only `log`
    rounding can differ between backends.

    Args:
        seeds: (rows,) int64.
        steps: (rows,) int64.
        vocab_size: tokens per row (used when `tokens` is None).
        tokens: optional (rows, n) token indices; noise is made only for them (cheaper when a
            filter keeps few tokens). The default is every token of the vocabulary.

    Returns:
        (rows, vocab_size) or (rows, n) float32 noise.
    """
    seeds, step_lo, step_hi = seeds[:, None], steps[:, None], steps[:, None] >> 32
    if tokens is None:
        # One Philox call gives four tokens' words: the dense case does a quarter of the work.
        groups = torch.arange(-(-vocab_size // 4), dtype=torch.int64, device=seeds.device)
        words = philox4x32(seeds, groups[None, :], step_lo, step_hi)
        bits = torch.stack(words, dim=-1).flatten(-2)[:, :vocab_size]
    else:
        words = philox4x32(seeds, tokens >> 2, step_lo, step_hi)
        bits = torch.stack(words, dim=-1).gather(-1, (tokens & 3)[..., None]).squeeze(-1)
    return _bits_to_gumbel(bits)


def kept_mask(
    x: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor, min_p: torch.Tensor
) -> torch.Tensor:
    """Which tokens survive min-p, top-k and top-p on temperature-scaled logits `x` (rows, V).

    Every filter is a threshold on the value of `x`, and ties at a threshold are kept:
    - min-p keeps `x >= max(x) + log(min_p)` (that is, `p >= min_p * p_max`);
    - top-k keeps `x >= ` the k-th largest value (off when k <= 0 or k >= V);
    - top-p, on the set left by the two above (renormalised), keeps `x >= t` for the largest
      value `t` whose tail mass `sum(p[x >= t])` reaches `top_p` (off when top_p >= 1).

    Args:
        x: (rows, vocab) float32 logits divided by temperature.
        top_k: (rows,) integer, 0 = off.
        top_p: (rows,) float, 1 = off.
        min_p: (rows,) float, 0 = off.

    Returns:
        (rows, vocab) bool mask of kept tokens.
    """
    vocab = x.shape[1]
    neg_inf = torch.tensor(float("-inf"), device=x.device)
    x_max = x.max(dim=-1, keepdim=True).values
    threshold = torch.where(min_p[:, None] > 0, x_max + torch.log(min_p[:, None]), neg_inf)
    use_k = (top_k > 0) & (top_k < vocab)
    use_p = top_p < 1
    if bool(use_k.any()) or bool(use_p.any()):
        if bool(use_p.any()):
            ordered = x.sort(dim=-1, descending=True).values
        else:  # top-k alone needs only the k largest values, not a full sort
            ordered = x.topk(int(top_k[use_k].max()), dim=-1).values
        kth = ordered.gather(-1, (top_k.long().clamp(1, ordered.shape[1]) - 1)[:, None])
        threshold = torch.maximum(threshold, torch.where(use_k[:, None], kth, neg_inf))
        if bool(use_p.any()):
            probs = torch.where(ordered >= threshold, torch.exp(ordered - x_max), 0.0)
            tail_mass = probs.cumsum(dim=-1)
            target = top_p[:, None] * tail_mass[:, -1:]
            first = (tail_mass < target).sum(dim=-1, keepdim=True).clamp(max=vocab - 1)
            cut = ordered.gather(-1, first)
            threshold = torch.maximum(threshold, torch.where(use_p[:, None], cut, neg_inf))
    return x >= threshold


def sample_reference(
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
    """Draw one token per row: greedy where temperature is 0, else Gumbel-max over kept tokens.

    A sampled row returns `argmax over kept tokens of (logits / temperature + gumbel)`, which is
    an exact draw from the renormalised softmax over the kept set (the Gumbel-max trick). The
    noise depends only on (seed, step, token index), so a row's draw does not depend on which
    other rows share the batch.

    Args:
        logits: (rows, vocab) float logits.
        temperature: (rows,) float; <= 0 means greedy (first index of the maximum).
        top_k: (rows,) integer, 0 = off.
        top_p: (rows,) float, 1 = off.
        min_p: (rows,) float, 0 = off.
        seeds: (rows,) int64 per-request seed.
        steps: (rows,) int64 per-request step (e.g. the number of tokens generated so far).
        out: optional (rows,) int64 buffer to write the tokens into; returned.

    Returns:
        (rows,) int64 token ids.
    """
    logits = logits.float()
    tokens = logits.argmax(dim=-1) if out is None else torch.argmax(logits, dim=-1, out=out)
    sampled = (temperature > 0).nonzero().squeeze(1)
    if sampled.numel() == 0:
        return tokens
    x = logits[sampled] / temperature[sampled, None].float()
    keep = kept_mask(x, top_k[sampled], top_p[sampled].float(), min_p[sampled].float())
    seeds, steps = seeds[sampled].long(), steps[sampled].long()
    vocab = x.shape[1]
    # The noise lies in [-2.82, 16.64] (23-bit uniforms), so a token more than 19.46 below
    # the row's maximum can never win the draw: skip its noise (the result is unchanged).
    keep &= x >= x.max(dim=-1, keepdim=True).values - _GUMBEL_REACH
    kept_per_row = int(keep.sum(dim=-1).max())
    scores = torch.full_like(x, float("-inf"))
    if kept_per_row * 4 < vocab:
        # Few survivors (top-k / top-p): make noise for the kept tokens only.
        kept = keep.float().topk(kept_per_row, dim=-1)
        ids = kept.indices
        noisy = x.gather(-1, ids) + gumbel_noise(seeds, steps, vocab, tokens=ids)
        scores.scatter_(-1, ids, torch.where(kept.values > 0, noisy, float("-inf")))
    else:
        scores = torch.where(keep, x + gumbel_noise(seeds, steps, vocab), scores)
    best = scores.argmax(dim=-1)
    # A row with no finite logit has nothing to draw from: fall back to its argmax (index 0).
    tokens[sampled] = torch.where(
        scores.gather(-1, best[:, None]).squeeze(-1) > float("-inf"), best, tokens[sampled]
    )
    return tokens
