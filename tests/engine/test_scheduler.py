"""Continuous batching with a fake runner that keeps tokens in simulated KV slots.

The fake runner writes each computed token id into the slot the block table gives it, and
"samples" a deterministic function of the context it reads back through the block table. Any
scheduling or block-management mistake (a wrong prefix hit, an overwritten shared block, a
lost preempted token) changes the context it reads, hence the tokens.
"""

from __future__ import annotations

import random

import pytest

from cortex.engine.block_manager import BlockManager
from cortex.engine.sampling import SamplingParams
from cortex.engine.scheduler import Scheduler, SchedulerOutput
from cortex.engine.sequence import Sequence, SequenceStatus
from cortex.errors import OverloadedError

BS = 4


def next_token(context: list[int]) -> int:
    value = 0
    for position, token in enumerate(context):
        value = (value * 31 + token * (position + 7)) % 1_000_003
    return value % 97


def reference(prompt: list[int], max_tokens: int) -> list[int]:
    tokens = list(prompt)
    for _ in range(max_tokens):
        tokens.append(next_token(tokens))
    return tokens[len(prompt) :]


class FakeRunner:
    """Token ids stand in for K/V: written to slots, read back through block tables."""

    def __init__(self, block_size: int) -> None:
        self.block_size = block_size
        self.slots: dict[int, int] = {}
        self.steps: list[SchedulerOutput] = []

    def slot(self, seq: Sequence, position: int) -> int:
        return seq.block_table[position // self.block_size] * self.block_size + (
            position % self.block_size
        )

    def execute(self, out: SchedulerOutput) -> list[int | None]:
        self.steps.append(out)
        written: set[int] = set()
        for chunk in out.chunks:  # every store happens before any attention, as in the model
            for position in range(chunk.start, chunk.end):
                slot = self.slot(chunk.seq, position)
                assert slot not in written, "two sequences wrote one slot in a step"
                written.add(slot)
                self.slots[slot] = chunk.seq.token_ids[position]
        sampled: list[int | None] = []
        for chunk in out.chunks:
            if chunk.samples:
                context = [self.slots[self.slot(chunk.seq, p)] for p in range(chunk.end)]
                sampled.append(next_token(context))
            else:
                sampled.append(None)
        return sampled


def run_to_completion(scheduler: Scheduler, runner: FakeRunner, max_steps: int = 10_000) -> int:
    steps = 0
    while scheduler.has_work():
        steps += 1
        assert steps <= max_steps, "no progress"
        out = scheduler.schedule()
        assert not out.is_empty, "work left but nothing scheduled"
        assert out.num_tokens <= scheduler.max_num_batched_tokens
        assert len(scheduler.running) <= scheduler.max_num_seqs
        scheduler.postprocess(out, runner.execute(out))
        for chunk in out.chunks:
            seq = chunk.seq
            if seq.num_output_tokens >= seq.params.max_tokens:
                scheduler.finish(seq, "length")
        scheduler.block_manager.check()
    return steps


def make_seq(name: str, prompt: list[int], max_tokens: int, arrival: int = 0) -> Sequence:
    return Sequence(name, prompt, SamplingParams(max_tokens=max_tokens), arrival=arrival)


@pytest.mark.parametrize("num_blocks", [200, 24])
def test_random_workload_matches_the_reference(num_blocks: int) -> None:
    rng = random.Random(num_blocks)
    manager = BlockManager(num_blocks, BS)
    scheduler = Scheduler(manager, max_num_seqs=8, max_num_batched_tokens=32, max_waiting=100)
    runner = FakeRunner(BS)
    system = [rng.randrange(97) for _ in range(10)]  # a shared "system prompt"
    seqs = []
    for i in range(30):
        own = [rng.randrange(97) for _ in range(rng.randrange(1, 40))]
        prompt = (system + own) if i % 2 else own
        seqs.append(make_seq(f"r{i}", prompt, rng.randrange(1, 20), arrival=i))
    for seq in seqs:
        scheduler.add(seq)
    run_to_completion(scheduler, runner)
    for seq in seqs:
        assert seq.output_token_ids == reference(seq.prompt_token_ids, seq.params.max_tokens)
        assert seq.status is SequenceStatus.FINISHED
    assert manager.num_used_blocks == 0
    assert sum(s.num_cached_tokens or 0 for s in seqs) > 0  # the system prompt was reused
    if num_blocks == 24:
        assert sum(s.num_preemptions for s in seqs) > 0  # the small budget forced preemption


def test_chunked_prefill_does_not_stall_running_decodes() -> None:
    manager = BlockManager(100, BS)
    scheduler = Scheduler(manager, max_num_seqs=4, max_num_batched_tokens=8)
    runner = FakeRunner(BS)
    short = make_seq("short", [1, 2, 3], 30)
    scheduler.add(short)
    scheduler.postprocess(out := scheduler.schedule(), runner.execute(out))
    long = make_seq("long", list(range(50)), 2)
    scheduler.add(long)
    chunk_sizes = []
    while long.num_output_tokens == 0:
        out = scheduler.schedule()
        by_name = {chunk.seq.request_id: chunk.num_tokens for chunk in out.chunks}
        assert by_name["short"] == 1  # the decode runs every step
        chunk_sizes.append(by_name["long"])
        scheduler.postprocess(out, runner.execute(out))
    assert sum(chunk_sizes) == 50 and max(chunk_sizes) == 7  # budget 8 minus the decode
    assert long.output_token_ids == reference(list(range(50)), 1)


def test_prefix_cache_hit_skips_the_cached_prefill() -> None:
    manager = BlockManager(100, BS)
    scheduler = Scheduler(manager, max_num_batched_tokens=64)
    runner = FakeRunner(BS)
    prompt = list(range(1, 15))
    first = make_seq("a", prompt, 3)
    scheduler.add(first)
    run_to_completion(scheduler, runner)
    second = make_seq("b", [*prompt, 50], 3)
    scheduler.add(second)
    out = scheduler.schedule()
    # 14 prompt + 3 generated tokens of `first` were computed: blocks 0..3 are full and cached.
    assert second.num_cached_tokens == 12
    assert out.chunks[0].start == 12 and out.chunks[0].num_tokens == 3
    scheduler.postprocess(out, runner.execute(out))
    run_to_completion(scheduler, runner)
    assert second.output_token_ids == reference([*prompt, 50], 3)


def test_preemption_takes_the_newest_and_requeues_it_first() -> None:
    manager = BlockManager(4, BS)
    scheduler = Scheduler(manager, max_num_seqs=4, max_num_batched_tokens=64)
    runner = FakeRunner(BS)
    old, new = make_seq("old", [1] * 8, 6), make_seq("new", [2] * 8, 6)
    later = make_seq("later", [3], 1)
    for seq in (old, new):
        scheduler.add(seq)
    scheduler.postprocess(out := scheduler.schedule(), runner.execute(out))
    scheduler.add(later)  # cannot be admitted: all four blocks are held
    assert manager.num_free_blocks == 0
    # Both decodes cross into a new block now; only the oldest can grow.
    out = scheduler.schedule()
    assert out.preempted == [new]
    assert [c.seq for c in out.chunks] == [old]
    assert list(scheduler.waiting) == [new, later]
    scheduler.postprocess(out, runner.execute(out))
    run_to_completion(scheduler, runner)
    for seq in (old, new, later):
        assert seq.output_token_ids == reference(seq.prompt_token_ids, seq.params.max_tokens)
    # Each admission is reported once: `new` twice, the second time after its preemption (the
    # engine's queue time counts only the first).
    assert [seq for step in runner.steps for seq in step.admitted] == [old, new, new, later]
    assert (old.num_preemptions, new.num_preemptions, later.num_preemptions) == (0, 1, 0)


def test_fifo_head_is_never_overtaken() -> None:
    manager = BlockManager(6, BS)
    scheduler = Scheduler(manager, max_num_seqs=8, max_num_batched_tokens=64)
    runner = FakeRunner(BS)
    holder = make_seq("holder", [1] * 12, 4)
    scheduler.add(holder)
    scheduler.postprocess(out := scheduler.schedule(), runner.execute(out))
    big, small = make_seq("big", [2] * 16, 1), make_seq("small", [3], 1)
    scheduler.add(big)
    scheduler.add(small)
    out = scheduler.schedule()
    # `small` would fit, but `big` came first and does not: nobody is admitted.
    assert [c.seq for c in out.chunks] == [holder]
    assert list(scheduler.waiting) == [big, small]
    scheduler.postprocess(out, runner.execute(out))
    run_to_completion(scheduler, runner)
    assert big.output_token_ids == reference([2] * 16, 1)


def test_max_num_seqs_bounds_the_running_batch() -> None:
    manager = BlockManager(100, BS)
    scheduler = Scheduler(manager, max_num_seqs=3, max_num_batched_tokens=100)
    seqs = [make_seq(f"r{i}", [i + 1] * 3, 5) for i in range(7)]
    for seq in seqs:
        scheduler.add(seq)
    runner = FakeRunner(BS)
    run_to_completion(scheduler, runner)
    assert max(len(step.chunks) for step in runner.steps) == 3
    for seq in seqs:
        assert seq.output_token_ids == reference(seq.prompt_token_ids, 5)


def test_waiting_queue_limit_raises_overloaded() -> None:
    scheduler = Scheduler(BlockManager(10, BS), max_waiting=2)
    scheduler.add(make_seq("a", [1], 1))
    scheduler.add(make_seq("b", [1], 1))
    with pytest.raises(OverloadedError) as info:
        scheduler.add(make_seq("c", [1], 1))
    assert info.value.status == 503 and info.value.retry_after_s


def test_finish_frees_waiting_and_running_sequences() -> None:
    manager = BlockManager(10, BS)
    scheduler = Scheduler(manager, max_num_seqs=1)
    running, waiting = make_seq("a", [1] * 6, 5), make_seq("b", [2], 5)
    scheduler.add(running)
    scheduler.add(waiting)
    scheduler.schedule()
    assert manager.num_used_blocks == 2
    scheduler.finish(waiting, "cancelled")
    scheduler.finish(running, "cancelled")
    scheduler.finish(running, "cancelled")  # idempotent
    assert not scheduler.has_work() and manager.num_used_blocks == 0
    assert running.finish_reason == "cancelled"
