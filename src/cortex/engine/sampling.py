"""Sampling controls: `SamplingParams`, penalties, logprobs, stop strings, and the draw."""

from __future__ import annotations

from collections.abc import Sequence as Seq
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from cortex.errors import InvalidRequestError

if TYPE_CHECKING:
    from cortex.engine.grammar import Grammar

__all__ = [
    "Logprob",
    "SampleResult",
    "SamplingParams",
    "StopStringMatcher",
    "TokenLogprob",
    "apply_penalties",
    "apply_token_masks",
    "sample_tokens",
    "top_logprobs",
]

MAX_TOP_LOGPROBS = 20


def _invalid(param: str, message: str) -> InvalidRequestError:
    return InvalidRequestError(f"{param}: {message}", param=param)


@dataclass(frozen=True)
class SamplingParams:
    """How one request samples its tokens and when it stops.

    Args:
        temperature: softmax temperature; 0 means greedy (argmax).
        top_p: keep the smallest set of tokens whose probability reaches `top_p` (1 = off).
        top_k: keep the `top_k` most likely tokens (0 = off).
        min_p: drop tokens less likely than `min_p` times the most likely one (0 = off).
        repetition_penalty: divide positive (multiply negative) logits of every token seen in
            the prompt or output by this (1 = off), as in transformers and vLLM.
        presence_penalty: subtract this from the logit of every token already generated
            (OpenAI semantics, -2..2).
        frequency_penalty: subtract this times the token's count in the output (-2..2).
        seed: makes the draw reproducible: the same seed gives the same tokens whatever else
            is in the batch. None draws a seed per request.
        stop: strings that end generation; matched across token boundaries, never included in
            the output text.
        stop_token_ids: token ids that end generation (besides the model's eos).
        max_tokens: most tokens to generate.
        logprobs: return the sampled token's log-probability (from the raw model logits).
        top_logprobs: also return this many most likely alternatives (0..20).
        ignore_eos: keep generating past the model's eos tokens.
        grammar: a `cortex.engine.grammar.Grammar` the output must match (structured output);
            tokens it does not allow are masked out before the draw.
    """

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    stop: tuple[str, ...] = field(default=())
    stop_token_ids: tuple[int, ...] = field(default=())
    max_tokens: int = 256
    logprobs: bool = False
    top_logprobs: int = 0
    ignore_eos: bool = False
    grammar: Grammar | None = None

    def __post_init__(self) -> None:
        # Lists are accepted for convenience and frozen into tuples.
        stop: Any = self.stop
        if isinstance(stop, str):
            stop = (stop,)
        object.__setattr__(self, "stop", tuple(stop))
        object.__setattr__(self, "stop_token_ids", tuple(int(t) for t in self.stop_token_ids))
        if not self.temperature >= 0.0:
            raise _invalid("temperature", f"must be >= 0, got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise _invalid("top_p", f"must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise _invalid("top_k", f"must be >= 0 (0 = off), got {self.top_k}")
        if not 0.0 <= self.min_p <= 1.0:
            raise _invalid("min_p", f"must be in [0, 1], got {self.min_p}")
        if not self.repetition_penalty > 0.0:
            raise _invalid("repetition_penalty", f"must be > 0, got {self.repetition_penalty}")
        for name in ("presence_penalty", "frequency_penalty"):
            value = getattr(self, name)
            if not -2.0 <= value <= 2.0:
                raise _invalid(name, f"must be in [-2, 2], got {value}")
        if self.max_tokens < 1:
            raise _invalid("max_tokens", f"must be >= 1, got {self.max_tokens}")
        if not 0 <= self.top_logprobs <= MAX_TOP_LOGPROBS:
            raise _invalid("top_logprobs", f"must be in [0, {MAX_TOP_LOGPROBS}]")
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise _invalid("stop", "stop sequences must be non-empty strings")
        if self.seed is not None and not 0 <= self.seed < 2**63:
            raise _invalid("seed", f"must be in [0, 2**63), got {self.seed}")

    @property
    def is_greedy(self) -> bool:
        """Temperature 0: the draw is an argmax."""
        return self.temperature == 0.0

    @property
    def has_penalties(self) -> bool:
        """Whether any repetition, presence or frequency penalty applies."""
        return (
            self.repetition_penalty != 1.0
            or self.presence_penalty != 0.0
            or self.frequency_penalty != 0.0
        )


@dataclass(frozen=True)
class Logprob:
    """A token id and its log-probability under the model."""

    token_id: int
    logprob: float


@dataclass(frozen=True)
class TokenLogprob:
    """The sampled token's log-probability, with the most likely alternatives when asked.

    Log-probabilities come from the model's raw logits (before penalties and temperature),
    as OpenAI reports them.

    Attributes:
        token_id: the sampled token.
        logprob: its log-probability.
        top_logprobs: the `top_logprobs` most likely tokens, most likely first.
    """

    token_id: int
    logprob: float
    top_logprobs: tuple[Logprob, ...] = ()


class StopStringMatcher:
    """Finds stop strings in streamed text, holding back text that could start one.

    Text is released only once no stop string can begin in it, so a stop string split over
    several tokens is still found and never reaches the client.

    Args:
        stops: the stop strings.
    """

    def __init__(self, stops: Seq[str]) -> None:
        self.stops = tuple(s for s in stops if s)
        self._held = ""
        self.stopped = False
        self.matched: str | None = None  # the stop string found

    def feed(self, text: str) -> str:
        """Add a text delta; returns what can be released now. Sets `stopped` (and `matched`,
        the stop string) on a match."""
        if self.stopped:
            return ""
        if not self.stops:
            return text
        buffer = self._held + text
        hits = [(i, stop) for stop in self.stops if (i := buffer.find(stop)) >= 0]
        if hits:
            at, self.matched = min(hits, key=lambda hit: hit[0])
            self.stopped = True
            self._held = ""
            return buffer[:at]
        keep = self._longest_partial_suffix(buffer)
        self._held = buffer[len(buffer) - keep :]
        return buffer[: len(buffer) - keep]

    def flush(self) -> str:
        """Release the held-back text (generation ended without a stop string)."""
        held, self._held = self._held, ""
        return "" if self.stopped else held

    def _longest_partial_suffix(self, buffer: str) -> int:
        best = 0
        for stop in self.stops:
            for length in range(min(len(stop) - 1, len(buffer)), best, -1):
                if buffer.endswith(stop[:length]):
                    best = length
                    break
        return best


def apply_penalties(
    logits: torch.Tensor,
    params: Seq[SamplingParams],
    prompt_ids: Seq[Seq[int]],
    output_ids: Seq[Seq[int]],
) -> torch.Tensor:
    """Apply repetition, presence and frequency penalties row by row (a new tensor).

    Repetition counts tokens of the prompt and the output (transformers / vLLM semantics);
    presence and frequency count the output only (OpenAI semantics).

    Args:
        logits: (rows, vocab) float32.
        params: per row.
        prompt_ids: per row, the prompt tokens.
        output_ids: per row, the tokens generated so far.
    """
    rows = [i for i, p in enumerate(params) if p.has_penalties]
    if not rows:
        return logits
    logits = logits.clone()
    device = logits.device
    for row in rows:
        p = params[row]
        line = logits[row]
        if p.repetition_penalty != 1.0:
            seen = torch.tensor(
                sorted(set(prompt_ids[row]) | set(output_ids[row])), dtype=torch.long
            ).to(device)
            values = line[seen]
            line[seen] = torch.where(
                values > 0, values / p.repetition_penalty, values * p.repetition_penalty
            )
        if (p.presence_penalty != 0.0 or p.frequency_penalty != 0.0) and output_ids[row]:
            ids = torch.tensor(list(output_ids[row]), dtype=torch.long).to(device)
            counts = torch.zeros_like(line).index_add_(
                0, ids, torch.ones_like(ids, dtype=line.dtype)
            )
            line -= p.frequency_penalty * counts + p.presence_penalty * (counts > 0).to(line.dtype)
    return logits


def apply_token_masks(logits: torch.Tensor, rows: Seq[int], masks: torch.Tensor) -> torch.Tensor:
    """Set to -inf the logits of tokens a row's grammar does not allow (a new tensor).

    Args:
        logits: (rows, vocab) float32.
        rows: the rows that have a mask, in the order of `masks`.
        masks: (len(rows), ceil(vocab / 32)) int32 bitmasks, bit `t % 32` of word `t // 32`
            set when token `t` is allowed (llguidance's layout).
    """
    if not rows:
        return logits
    import numpy as np

    vocab = logits.shape[1]
    # Little-endian words: token t is bit t % 8 of byte t // 8 (numpy unpacks bits far faster
    # than shifts in torch on CPU).
    unpacked = np.unpackbits(masks.numpy().view(np.uint8), axis=1, bitorder="little")
    blocked = np.logical_not(unpacked[:, :vocab].view(np.bool_))
    if logits.device.type == "cpu":
        # numpy, not torch: a torch elementwise op opens a parallel region whose threads all
        # wait on the slowest, which costs milliseconds on a busy host.
        view = logits.numpy().copy()
        for row, mask in zip(rows, blocked, strict=True):
            np.copyto(view[row], -np.inf, where=mask)
        return torch.from_numpy(view)
    logits = logits.clone()
    index = torch.tensor(list(rows), dtype=torch.long).to(logits.device)
    on_device = torch.from_numpy(blocked).to(logits.device, non_blocking=True)
    logits[index] = logits[index].masked_fill(on_device, float("-inf"))
    return logits


def top_logprobs(
    logits: torch.Tensor, token_ids: torch.Tensor, num_top: Seq[int]
) -> list[TokenLogprob]:
    """Log-probabilities of `token_ids` under `logits`, with each row's top alternatives.

    Args:
        logits: (rows, vocab) raw model logits.
        token_ids: (rows,) the sampled tokens.
        num_top: per row, how many alternatives to return.
    """
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    chosen = logprobs.gather(1, token_ids.view(-1, 1).to(logprobs.device)).view(-1).tolist()
    widest = max(num_top, default=0)
    top_values: list[list[float]] = []
    top_ids: list[list[int]] = []
    if widest > 0:
        values, ids = logprobs.topk(widest, dim=-1)
        top_values, top_ids = values.tolist(), ids.tolist()
    result = []
    for row, token_id in enumerate(token_ids.tolist()):
        top = tuple(Logprob(top_ids[row][k], top_values[row][k]) for k in range(num_top[row]))
        result.append(TokenLogprob(int(token_id), float(chosen[row]), top))
    return result


@dataclass(frozen=True)
class SampleResult:
    """The tokens drawn for a batch of rows, with their logprobs where asked.

    Attributes:
        token_ids: one per row.
        logprobs: one per row; None for rows that did not ask.
    """

    token_ids: list[int]
    logprobs: list[TokenLogprob | None]


def sample_tokens(
    logits: torch.Tensor,
    params: Seq[SamplingParams],
    seeds: Seq[int],
    steps: Seq[int],
    prompt_ids: Seq[Seq[int]],
    output_ids: Seq[Seq[int]],
    masks: tuple[Seq[int], torch.Tensor] | None = None,
) -> SampleResult:
    """Penalise, draw one token per row with `kernels.sample`, and compute logprobs.

    The draw of a row is a pure function of (seed, step, logits row), so a request gives the
    same tokens whatever else shares its batch.

    Args:
        logits: (rows, vocab) float32 raw model logits.
        params: per row.
        seeds: per row, the request's resolved seed.
        steps: per row, how many tokens the request has generated so far.
        prompt_ids: per row, the prompt tokens (for the repetition penalty).
        output_ids: per row, the generated tokens (for all penalties).
        masks: the rows constrained by a grammar and their allowed-token bitmasks (see
            `apply_token_masks`).
    """
    from cortex.engine import kernels

    device = logits.device
    penalised = apply_penalties(logits, params, prompt_ids, output_ids)
    if masks is not None:
        penalised = apply_token_masks(penalised, *masks)

    def column(values: list[Any], dtype: torch.dtype) -> torch.Tensor:
        return torch.tensor(values, dtype=dtype).to(device, non_blocking=True)

    token_ids = kernels.sample(
        penalised.float(),
        column([p.temperature for p in params], torch.float32),
        column([p.top_k for p in params], torch.int64),
        column([p.top_p for p in params], torch.float32),
        column([p.min_p for p in params], torch.float32),
        column(list(seeds), torch.int64),
        column(list(steps), torch.int64),
    )
    wanted = [i for i, p in enumerate(params) if p.logprobs or p.top_logprobs > 0]
    logprobs: list[TokenLogprob | None] = [None] * len(params)
    if wanted:
        index = torch.tensor(wanted, dtype=torch.long).to(device)
        found = top_logprobs(
            logits.index_select(0, index),
            token_ids.index_select(0, index),
            [params[i].top_logprobs for i in wanted],
        )
        for row, entry in zip(wanted, found, strict=True):
            logprobs[row] = entry
    return SampleResult([int(t) for t in token_ids.tolist()], logprobs)
