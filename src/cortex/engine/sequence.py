"""One request's token state as the scheduler, block manager and runner see it (no torch)."""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cortex.engine.grammar import GrammarMatcher
    from cortex.engine.sampling import SamplingParams

__all__ = ["Sequence", "SequenceStatus"]


class SequenceStatus(enum.Enum):
    """Where a sequence is in its life: queued, in the running batch, or done."""

    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


class Sequence:
    """The tokens of one request and how much of them has KV in the paged cache.

    `token_ids` holds the prompt followed by every token sampled so far. The first
    `num_computed_tokens` of them have keys and values written in the blocks listed in
    `block_table`; the rest still have to go through the model. After a preemption the
    sequence keeps its tokens but loses its blocks, so it recomputes them (helped by the
    prefix cache when its full blocks survived).

    Args:
        request_id: the caller's id for the request.
        prompt_token_ids: the prompt, already tokenized; at least one token.
        params: how to sample and when to stop.
        seed: the resolved sampling seed (the request's, or one drawn for it).
        arrival: a monotonically increasing number giving FIFO order.
    """

    def __init__(
        self,
        request_id: str,
        prompt_token_ids: list[int],
        params: SamplingParams,
        *,
        seed: int = 0,
        arrival: int = 0,
    ) -> None:
        if not prompt_token_ids:
            raise ValueError("a sequence needs at least one prompt token")
        self.request_id = request_id
        self.token_ids: list[int] = list(prompt_token_ids)
        self.num_prompt_tokens = len(prompt_token_ids)
        self.params = params
        self.seed = seed
        self.arrival = arrival
        self.status = SequenceStatus.WAITING
        self.block_table: list[int] = []
        # Chained hashes of the leading full blocks whose KV is computed (prefix cache keys).
        self.block_hashes: list[bytes] = []
        self.num_computed_tokens = 0
        # Prompt tokens served from the prefix cache at first admission (None: not yet admitted).
        self.num_cached_tokens: int | None = None
        self.num_preemptions = 0
        self.finish_reason: str | None = None
        # Structured output: where the output is in its grammar (None: unconstrained).
        self.matcher: GrammarMatcher | None = None

    @property
    def num_tokens(self) -> int:
        """Prompt plus generated tokens."""
        return len(self.token_ids)

    @property
    def num_output_tokens(self) -> int:
        """Tokens generated so far."""
        return len(self.token_ids) - self.num_prompt_tokens

    @property
    def output_token_ids(self) -> list[int]:
        """The generated tokens, in order."""
        return self.token_ids[self.num_prompt_tokens :]

    @property
    def prompt_token_ids(self) -> list[int]:
        """The prompt tokens."""
        return self.token_ids[: self.num_prompt_tokens]

    @property
    def num_uncomputed_tokens(self) -> int:
        """Tokens whose KV is not in the cache yet (the next step's work for this sequence)."""
        return len(self.token_ids) - self.num_computed_tokens

    @property
    def is_finished(self) -> bool:
        """Whether the sequence has left the scheduler for good."""
        return self.status is SequenceStatus.FINISHED

    def append_token(self, token_id: int) -> None:
        """Add a sampled token; its KV is computed by the next step."""
        self.token_ids.append(token_id)

    def __repr__(self) -> str:
        return (
            f"Sequence({self.request_id!r}, status={self.status.value}, "
            f"tokens={self.num_tokens}, computed={self.num_computed_tokens}, "
            f"blocks={len(self.block_table)})"
        )
