"""Continuous batching: which sequences run each step, and with how many tokens (no torch)."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from cortex.engine.block_manager import BlockManager
from cortex.engine.sequence import Sequence, SequenceStatus
from cortex.errors import OverloadedError

__all__ = ["ScheduledChunk", "Scheduler", "SchedulerOutput"]


@dataclass(frozen=True)
class ScheduledChunk:
    """One sequence's share of a step: its next `num_tokens` uncomputed tokens.

    Attributes:
        seq: the sequence.
        start: index of the first token computed this step (`seq.num_computed_tokens`).
        num_tokens: how many tokens are computed this step.
    """

    seq: Sequence
    start: int
    num_tokens: int

    @property
    def end(self) -> int:
        """Index one past the last token computed this step."""
        return self.start + self.num_tokens

    @property
    def samples(self) -> bool:
        """Whether the step reaches the sequence's last token, so a new token is sampled."""
        return self.end == self.seq.num_tokens


@dataclass
class SchedulerOutput:
    """What one step runs.

    Attributes:
        chunks: the scheduled sequences in batch order (oldest first).
        preempted: sequences that lost their blocks this step and went back to waiting.
        admitted: sequences that joined the running batch this step, from the waiting queue
            (new ones, and preempted ones coming back: `num_preemptions` tells them apart).
    """

    chunks: list[ScheduledChunk] = field(default_factory=list)
    preempted: list[Sequence] = field(default_factory=list)
    admitted: list[Sequence] = field(default_factory=list)

    @property
    def num_tokens(self) -> int:
        """Tokens the step computes."""
        return sum(chunk.num_tokens for chunk in self.chunks)

    @property
    def is_decode(self) -> bool:
        """Every sequence computes exactly one token (the decode attention path applies)."""
        return bool(self.chunks) and all(chunk.num_tokens == 1 for chunk in self.chunks)

    @property
    def is_empty(self) -> bool:
        """Nothing to run."""
        return not self.chunks


class Scheduler:
    """Admits, batches, chunks and preempts sequences; the runner does the computing.

    Each step first serves the running sequences, oldest first: a decoding sequence gets one
    token, a sequence still in prefill gets as much of its prompt as the step's token budget
    leaves (chunked prefill), so a long prompt shares steps with running decodes instead of
    stalling them. When blocks run out, the newest running sequence is preempted: it frees its
    blocks and goes back to the front of the waiting queue to be recomputed later (its full
    blocks usually survive in the prefix cache). Then waiting sequences are admitted in arrival
    order while the budget, `max_num_seqs` and free blocks allow; the head of the queue is never
    overtaken (FIFO fairness).

    Args:
        block_manager: the KV block allocator.
        max_num_seqs: most sequences in the running batch.
        max_num_batched_tokens: token budget of one step (prefill chunks plus decodes).
        max_waiting: most sequences queued for admission; `add` beyond it raises
            `OverloadedError`.
    """

    def __init__(
        self,
        block_manager: BlockManager,
        *,
        max_num_seqs: int = 64,
        max_num_batched_tokens: int = 512,
        max_waiting: int = 256,
    ) -> None:
        if max_num_seqs < 1 or max_num_batched_tokens < 1 or max_waiting < 0:
            raise ValueError("max_num_seqs and max_num_batched_tokens must be positive")
        self.block_manager = block_manager
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.max_waiting = max_waiting
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []

    @property
    def num_waiting(self) -> int:
        """Sequences queued for admission (new or preempted)."""
        return len(self.waiting)

    @property
    def num_running(self) -> int:
        """Sequences in the running batch."""
        return len(self.running)

    def has_work(self) -> bool:
        """Whether any sequence is waiting or running."""
        return bool(self.waiting or self.running)

    def add(self, seq: Sequence) -> None:
        """Queue a new sequence at the back; raises `OverloadedError` when the queue is full."""
        if len(self.waiting) >= self.max_waiting:
            raise OverloadedError(
                f"the engine's waiting queue is full ({self.max_waiting} requests); retry later"
            )
        seq.status = SequenceStatus.WAITING
        self.waiting.append(seq)

    def schedule(self) -> SchedulerOutput:
        """Choose the next step's sequences and token counts, allocating their blocks."""
        out = SchedulerOutput()
        budget = self.max_num_batched_tokens
        manager = self.block_manager

        # Decodes first, so a long prompt in chunked prefill never delays them; then prefills.
        # Both in admission order.
        order = [seq for seq in self.running if seq.num_uncomputed_tokens == 1]
        order += [seq for seq in self.running if seq.num_uncomputed_tokens > 1]
        scheduled: dict[int, ScheduledChunk] = {}
        for seq in order:
            if budget <= 0:
                break
            if seq.status is not SequenceStatus.RUNNING:
                continue  # preempted earlier in this step
            num_tokens = min(seq.num_uncomputed_tokens, budget)
            while not manager.allocate(seq, num_tokens):
                victim = self.running.pop()
                dropped = scheduled.pop(id(victim), None)
                if dropped is not None:
                    budget += dropped.num_tokens
                self._preempt(victim)
                out.preempted.append(victim)
                if victim is seq:
                    break
            if seq.status is not SequenceStatus.RUNNING:
                continue
            scheduled[id(seq)] = ScheduledChunk(seq, seq.num_computed_tokens, num_tokens)
            budget -= num_tokens
        out.chunks = list(scheduled.values())

        # Admitting while others were just preempted would only thrash.
        while (
            not out.preempted
            and self.waiting
            and budget > 0
            and len(self.running) < self.max_num_seqs
        ):
            seq = self.waiting[0]
            if not seq.block_table:
                cached = manager.match_prefix(seq)
                if seq.num_cached_tokens is None:
                    seq.num_cached_tokens = min(cached, seq.num_prompt_tokens)
            num_tokens = min(seq.num_uncomputed_tokens, budget)
            if not manager.allocate(seq, num_tokens):
                manager.free(seq)
                break
            self.waiting.popleft()
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
            out.admitted.append(seq)
            out.chunks.append(ScheduledChunk(seq, seq.num_computed_tokens, num_tokens))
            budget -= num_tokens
        return out

    def postprocess(self, out: SchedulerOutput, sampled: Iterable[int | None]) -> None:
        """Record a finished step: computed tokens, newly full blocks, sampled tokens.

        Args:
            out: the step's schedule.
            sampled: per chunk, the token sampled for it (None where `chunk.samples` is false).
        """
        for chunk, token_id in zip(out.chunks, sampled, strict=True):
            seq = chunk.seq
            seq.num_computed_tokens = chunk.end
            self.block_manager.commit_full_blocks(seq)
            if token_id is not None:
                seq.append_token(token_id)

    def finish(self, seq: Sequence, reason: str) -> None:
        """Take `seq` out of the scheduler for good and free its blocks."""
        if seq.is_finished:
            return
        if seq.status is SequenceStatus.RUNNING:
            self.running.remove(seq)
        else:
            self.waiting.remove(seq)
        self.block_manager.free(seq)
        seq.status = SequenceStatus.FINISHED
        seq.finish_reason = reason

    def _preempt(self, seq: Sequence) -> None:
        self.block_manager.free(seq)
        seq.status = SequenceStatus.WAITING
        seq.num_preemptions += 1
        # Preempted sequences are older than everything waiting: they go back to the front.
        self.waiting.appendleft(seq)
