"""Paged KV blocks: the allocator, reference counts and the prefix cache (no torch)."""

from __future__ import annotations

import hashlib
from array import array
from collections import OrderedDict, deque
from collections.abc import Sequence as Seq

from cortex.engine.sequence import Sequence

__all__ = ["Block", "BlockManager", "hash_block"]


def hash_block(parent_hash: bytes | None, token_ids: Seq[int]) -> bytes:
    """The prefix-cache key of a full block: its tokens chained with its parent's key.

    Chaining makes the key depend on every token before the block, so two blocks match only
    when their whole prefixes match.
    """
    digest = hashlib.blake2b(digest_size=16)
    digest.update(parent_hash or b"\x00" * 16)
    digest.update(array("q", token_ids).tobytes())
    return digest.digest()


class Block:
    """One physical KV block: `block_size` token slots in every layer's K and V cache.

    Attributes:
        block_id: index into the cache tensors' first axis.
        ref_count: how many sequences hold the block in their block table.
        block_hash: the prefix-cache key once the block is full and computed, else None.
        token_ids: the tokens the block holds when it is hashed (checked on a cache hit).
    """

    __slots__ = ("block_hash", "block_id", "ref_count", "token_ids")

    def __init__(self, block_id: int) -> None:
        self.block_id = block_id
        self.ref_count = 0
        self.block_hash: bytes | None = None
        self.token_ids: tuple[int, ...] = ()


class BlockManager:
    """Hands out KV blocks to sequences and keeps freed full blocks as a prefix cache.

    A free block is either blank (never hashed, or its hash was dropped) or cached: it still
    holds a full, hashed block's KV that a later request with the same prefix can reuse.
    Allocation takes blank blocks first, then evicts the least recently freed cached block.
    Both kinds count as free, so `num_free_blocks + num_used_blocks == num_blocks` always.

    Args:
        num_blocks: physical blocks in the KV cache.
        block_size: token slots per block.
        enable_prefix_caching: reuse full blocks across requests by hash.
    """

    def __init__(self, num_blocks: int, block_size: int, *, enable_prefix_caching: bool = True):
        if num_blocks < 1 or block_size < 1:
            raise ValueError("num_blocks and block_size must be positive")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.blocks = [Block(i) for i in range(num_blocks)]
        self._blank: deque[int] = deque(range(num_blocks))
        # Freed hashed blocks, least recently freed first (evicted from the front).
        self._cached_free: OrderedDict[int, None] = OrderedDict()
        self._hash_to_block: dict[bytes, int] = {}

    # Accounting -----------------------------------------------------------------------------

    @property
    def num_free_blocks(self) -> int:
        """Blocks no sequence holds (blank or cached): what allocation can use."""
        return len(self._blank) + len(self._cached_free)

    @property
    def num_used_blocks(self) -> int:
        """Blocks held by at least one sequence."""
        return self.num_blocks - self.num_free_blocks

    @property
    def num_cached_blocks(self) -> int:
        """Blocks, used or free, that hold a hashed full block."""
        return len(self._hash_to_block)

    @property
    def usage(self) -> float:
        """Fraction of blocks held by sequences."""
        return self.num_used_blocks / self.num_blocks

    def blocks_for(self, num_tokens: int) -> int:
        """Blocks needed to hold `num_tokens` tokens."""
        return -(-num_tokens // self.block_size)

    # Prefix cache ---------------------------------------------------------------------------

    def match_prefix(self, seq: Sequence) -> int:
        """Give a blockless sequence the cached blocks of its longest cached prefix.

        Only full blocks are matched, and never the last token: the step after admission must
        compute at least one token to produce logits. Returns the number of tokens matched,
        which become `seq.num_computed_tokens`.
        """
        if seq.block_table:
            raise ValueError(f"{seq!r} already holds blocks")
        if not self.enable_prefix_caching:
            return 0
        parent: bytes | None = None
        for index in range((seq.num_tokens - 1) // self.block_size):
            tokens = seq.token_ids[index * self.block_size : (index + 1) * self.block_size]
            key = hash_block(parent, tokens)
            block_id = self._hash_to_block.get(key)
            if block_id is None or self.blocks[block_id].token_ids != tuple(tokens):
                break
            self._take(block_id)
            seq.block_table.append(block_id)
            seq.block_hashes.append(key)
            parent = key
        seq.num_computed_tokens = len(seq.block_table) * self.block_size
        return seq.num_computed_tokens

    def commit_full_blocks(self, seq: Sequence) -> None:
        """Hash the sequence's blocks that became full and computed, so others can reuse them."""
        if not self.enable_prefix_caching:
            return
        num_full = seq.num_computed_tokens // self.block_size
        for index in range(len(seq.block_hashes), num_full):
            tokens = tuple(seq.token_ids[index * self.block_size : (index + 1) * self.block_size])
            parent = seq.block_hashes[-1] if seq.block_hashes else None
            key = hash_block(parent, tokens)
            seq.block_hashes.append(key)
            block = self.blocks[seq.block_table[index]]
            # An identical block computed concurrently by another sequence keeps the key.
            if block.block_hash is None and key not in self._hash_to_block:
                block.block_hash = key
                block.token_ids = tokens
                self._hash_to_block[key] = block.block_id

    # Allocation -----------------------------------------------------------------------------

    def num_blocks_needed(self, seq: Sequence, num_new_tokens: int) -> int:
        """New blocks `seq` needs so that `num_new_tokens` more tokens get KV slots."""
        total = self.blocks_for(seq.num_computed_tokens + num_new_tokens)
        return max(0, total - len(seq.block_table))

    def can_allocate(self, seq: Sequence, num_new_tokens: int) -> bool:
        """Whether `allocate(seq, num_new_tokens)` would succeed."""
        return self.num_blocks_needed(seq, num_new_tokens) <= self.num_free_blocks

    def allocate(self, seq: Sequence, num_new_tokens: int) -> bool:
        """Extend `seq`'s block table to cover `num_new_tokens` more tokens; False if full."""
        needed = self.num_blocks_needed(seq, num_new_tokens)
        if needed > self.num_free_blocks:
            return False
        for _ in range(needed):
            seq.block_table.append(self._take_free())
        return True

    def free(self, seq: Sequence) -> None:
        """Release every block of `seq` and forget its computed tokens.

        Blocks are released last first, so a prompt's leading blocks, the ones most likely to
        be shared, are the last to be evicted.
        """
        for block_id in reversed(seq.block_table):
            block = self.blocks[block_id]
            if block.ref_count <= 0:
                raise RuntimeError(f"block {block_id} freed more often than taken")
            block.ref_count -= 1
            if block.ref_count == 0:
                if block.block_hash is not None:
                    self._cached_free[block_id] = None
                else:
                    self._blank.append(block_id)
        seq.block_table.clear()
        seq.block_hashes.clear()
        seq.num_computed_tokens = 0

    def reset_prefix_cache(self) -> None:
        """Forget every cached block that no sequence holds."""
        while self._cached_free:
            block_id, _ = self._cached_free.popitem(last=False)
            self._forget_hash(self.blocks[block_id])
            self._blank.append(block_id)

    def check(self) -> None:
        """Verify the allocator's invariants (for tests); raises AssertionError when broken."""
        free = set(self._blank) | set(self._cached_free)
        assert len(free) == len(self._blank) + len(self._cached_free), "block listed twice"
        for block in self.blocks:
            assert (block.ref_count == 0) == (block.block_id in free), f"block {block.block_id}"
            if block.block_id in self._cached_free:
                assert block.block_hash is not None
        for key, block_id in self._hash_to_block.items():
            assert self.blocks[block_id].block_hash == key

    # Internals ------------------------------------------------------------------------------

    def _take(self, block_id: int) -> None:
        block = self.blocks[block_id]
        if block.ref_count == 0:
            del self._cached_free[block_id]
        block.ref_count += 1

    def _take_free(self) -> int:
        if self._blank:
            block_id = self._blank.popleft()
        else:
            block_id, _ = self._cached_free.popitem(last=False)
            self._forget_hash(self.blocks[block_id])
        self.blocks[block_id].ref_count = 1
        return block_id

    def _forget_hash(self, block: Block) -> None:
        if block.block_hash is not None:
            if self._hash_to_block.get(block.block_hash) == block.block_id:
                del self._hash_to_block[block.block_hash]
            block.block_hash = None
            block.token_ids = ()
