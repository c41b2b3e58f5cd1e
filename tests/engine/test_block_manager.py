"""The paged KV allocator: exact accounting, prefix cache by chained hash, LRU eviction."""

from __future__ import annotations

import pytest

from cortex.engine.block_manager import BlockManager, hash_block
from cortex.engine.sampling import SamplingParams
from cortex.engine.sequence import Sequence

BS = 4


def make_seq(tokens: list[int], name: str = "r") -> Sequence:
    return Sequence(name, tokens, SamplingParams())


def compute(manager: BlockManager, seq: Sequence) -> None:
    """Allocate and 'compute' every uncomputed token, as a finished prefill step would."""
    assert manager.allocate(seq, seq.num_uncomputed_tokens)
    seq.num_computed_tokens = seq.num_tokens
    manager.commit_full_blocks(seq)


def test_allocate_and_free_account_exactly() -> None:
    manager = BlockManager(10, BS)
    seq = make_seq(list(range(9)))
    assert manager.num_blocks_needed(seq, 9) == 3
    assert manager.allocate(seq, 9)
    assert len(seq.block_table) == 3
    assert (manager.num_used_blocks, manager.num_free_blocks) == (3, 7)
    # Growing within the last block costs nothing; crossing into a new one costs one.
    seq.num_computed_tokens = 9
    assert manager.allocate(seq, 3)
    assert manager.num_used_blocks == 3
    assert manager.allocate(seq, 4)
    assert manager.num_used_blocks == 4
    manager.check()
    manager.free(seq)
    assert (manager.num_used_blocks, manager.num_free_blocks) == (0, 10)
    assert seq.block_table == [] and seq.num_computed_tokens == 0
    manager.check()


def test_allocation_refuses_beyond_capacity_without_side_effects() -> None:
    manager = BlockManager(3, BS)
    seq = make_seq(list(range(13)))
    assert not manager.can_allocate(seq, 13)
    assert not manager.allocate(seq, 13)
    assert seq.block_table == [] and manager.num_free_blocks == 3
    assert manager.allocate(seq, 12)
    assert manager.num_free_blocks == 0


def test_prefix_hit_shares_full_blocks_and_counts_refs() -> None:
    manager = BlockManager(16, BS)
    first = make_seq(list(range(10)), "a")
    compute(manager, first)  # blocks: [0..3] [4..7] partial [8, 9]
    assert manager.num_cached_blocks == 2

    second = make_seq([*range(8), 42, 43, 44], "b")
    assert manager.match_prefix(second) == 8
    assert second.block_table == first.block_table[:2]
    assert [manager.blocks[b].ref_count for b in second.block_table] == [2, 2]
    assert manager.allocate(second, second.num_uncomputed_tokens)
    assert manager.num_used_blocks == 3 + 1
    manager.free(first)
    # The shared blocks stay used by `second`; first's partial block is free again.
    assert manager.num_used_blocks == 3
    assert [manager.blocks[b].ref_count for b in second.block_table[:2]] == [1, 1]
    manager.free(second)
    assert manager.num_used_blocks == 0
    manager.check()


def test_freed_blocks_stay_cached_until_evicted() -> None:
    manager = BlockManager(4, BS)
    first = make_seq(list(range(9)), "a")
    compute(manager, first)
    manager.free(first)
    assert manager.num_free_blocks == 4 and manager.num_cached_blocks == 2
    again = make_seq(list(range(9)), "b")
    assert manager.match_prefix(again) == 8
    assert manager.num_used_blocks == 2
    manager.free(again)

    # Blank blocks are handed out before cached ones; then the least recently freed goes.
    other = make_seq([100 + i for i in range(9)], "c")
    assert manager.allocate(other, 8)
    assert manager.num_cached_blocks == 2
    assert manager.allocate(other, 9)  # needs a third block: evicts one cached block
    assert manager.num_cached_blocks == 1
    manager.check()


def test_lru_evicts_the_tail_of_a_prompt_before_its_head() -> None:
    manager = BlockManager(3, BS)
    first = make_seq(list(range(12)), "a")
    compute(manager, first)  # three full blocks
    first_blocks = list(first.block_table)
    manager.free(first)
    fresh = make_seq([7] * 4, "b")
    assert manager.allocate(fresh, 4)
    # The last block of the freed prompt was evicted, its leading blocks survive.
    assert fresh.block_table == [first_blocks[2]]
    probe = make_seq(list(range(13)), "c")
    assert manager.match_prefix(probe) == 8


def test_chained_hash_requires_the_same_prefix() -> None:
    manager = BlockManager(8, BS)
    first = make_seq([1, 2, 3, 4, 5, 6, 7, 8, 9], "a")
    compute(manager, first)
    # Same second block, different first block: no match at all.
    shifted = make_seq([0, 2, 3, 4, 5, 6, 7, 8, 9], "b")
    assert manager.match_prefix(shifted) == 0
    assert hash_block(None, [1, 2, 3, 4]) != hash_block(hash_block(None, [0]), [1, 2, 3, 4])


def test_match_never_covers_the_last_token() -> None:
    manager = BlockManager(8, BS)
    first = make_seq(list(range(8)), "a")
    compute(manager, first)
    same = make_seq(list(range(8)), "b")
    # Both blocks are cached, but one token must stay to be computed for logits.
    assert manager.match_prefix(same) == 4
    assert same.num_uncomputed_tokens == 4


def test_concurrent_identical_blocks_keep_one_cache_entry() -> None:
    manager = BlockManager(8, BS)
    a, b = make_seq(list(range(5)), "a"), make_seq(list(range(5)), "b")
    compute(manager, a)
    assert manager.allocate(b, 5)  # computed without a prefix match, like a concurrent twin
    b.num_computed_tokens = 5
    manager.commit_full_blocks(b)
    assert manager.num_cached_blocks == 1
    assert b.block_hashes == a.block_hashes
    manager.free(a)
    manager.free(b)
    manager.check()
    assert manager.num_free_blocks == 8


def test_disabled_prefix_cache_never_matches() -> None:
    manager = BlockManager(8, BS, enable_prefix_caching=False)
    first = make_seq(list(range(9)), "a")
    compute(manager, first)
    assert manager.match_prefix(make_seq(list(range(9)), "b")) == 0
    assert manager.num_cached_blocks == 0


def test_double_free_is_an_error() -> None:
    manager = BlockManager(4, BS)
    seq = make_seq([1, 2, 3])
    assert manager.allocate(seq, 3)
    table = list(seq.block_table)
    manager.free(seq)
    seq.block_table = table
    with pytest.raises(RuntimeError):
        manager.free(seq)


def test_reset_prefix_cache_forgets_free_blocks_only() -> None:
    manager = BlockManager(8, BS)
    kept, dropped = make_seq(list(range(5)), "a"), make_seq([9] * 5, "b")
    compute(manager, kept)
    compute(manager, dropped)
    manager.free(dropped)
    manager.reset_prefix_cache()
    assert manager.num_cached_blocks == 1
    assert manager.match_prefix(make_seq([9] * 5, "c")) == 0
    manager.check()
