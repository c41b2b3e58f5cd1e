"""The model runner: batch tensors and attention metadata, the paged KV cache, the forward step."""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from cortex.engine.kernels.metadata import AttentionMetadata
from cortex.engine.sampling import TokenLogprob, sample_tokens
from cortex.engine.scheduler import SchedulerOutput

if TYPE_CHECKING:
    from cortex.engine.models import Llama
    from cortex.engine.sequence import Sequence

__all__ = [
    "ModelRunner",
    "StepResult",
    "kv_bytes_per_token",
    "kv_cache_blocks",
]

logger = logging.getLogger(__name__)

# Decode batch sizes captured as CUDA graphs; a batch runs in the smallest bucket that holds it.
GRAPH_BATCH_SIZES = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256)


def kv_bytes_per_token(model: Llama, dtype: torch.dtype) -> int:
    """Bytes of K and V one token takes across all layers."""
    config = model.config
    element = torch.empty((), dtype=dtype).element_size()
    return 2 * config.num_layers * config.num_kv_heads * config.head_dim * element


DEFAULT_KV_CACHE_MB_CPU = 512
# On CUDA without a budget, the cache takes this share of the memory free after loading.
DEFAULT_KV_CACHE_SHARE_CUDA = 0.5


def kv_cache_blocks(
    model: Llama, dtype: torch.dtype, block_size: int, kv_cache_mb: float | None
) -> int:
    """How many KV blocks a budget of `kv_cache_mb` holds (None: the device's default budget).

    Raises:
        ValueError: the budget holds not even one block.
    """
    per_block = kv_bytes_per_token(model, dtype) * block_size
    if kv_cache_mb is not None:
        budget = int(kv_cache_mb * 2**20)
    elif next(model.parameters()).device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(next(model.parameters()).device)
        budget = int(free * DEFAULT_KV_CACHE_SHARE_CUDA)
    else:
        budget = DEFAULT_KV_CACHE_MB_CPU * 2**20
    if budget < per_block:
        raise ValueError(
            f"kv_cache_mb={kv_cache_mb} holds no block of {block_size} tokens ({per_block} bytes)"
        )
    return budget // per_block


@dataclass(frozen=True)
class StepResult:
    """What one step produced, aligned with the schedule's chunks.

    Attributes:
        token_ids: per chunk, the sampled token, or None when the chunk stopped mid-prompt.
        logprobs: per chunk, the sampled token's logprobs when its request asked for them.
    """

    token_ids: list[int | None]
    logprobs: list[TokenLogprob | None]


@dataclass
class _Graph:
    """One captured decode step for a fixed batch size, with its static input buffers."""

    graph: torch.cuda.CUDAGraph
    batch_size: int
    input_ids: torch.Tensor
    positions: torch.Tensor
    slot_mapping: torch.Tensor
    seq_lens: torch.Tensor
    block_tables: torch.Tensor
    hidden: torch.Tensor


class ModelRunner:
    """Runs scheduled steps through `Llama.forward_paged` over a paged KV cache it owns.

    The cache holds, per layer, K and V tensors of shape
    `(num_blocks, block_size, num_kv_heads, head_dim)`. On CUDA, pure-decode steps replay a
    CUDA graph captured for the smallest batch-size bucket that holds them (launch overhead
    dominates decode of small models); prefill and mixed steps, and every step on CPU, run
    eagerly.

    Args:
        model: the loaded model.
        num_blocks: physical KV blocks to allocate.
        block_size: token slots per block.
        max_num_seqs: the largest decode batch (bounds the captured graphs).
        max_model_len: the longest sequence (bounds the graphs' block tables).
        use_cuda_graphs: capture decode graphs; None means "when the device is CUDA".
    """

    def __init__(
        self,
        model: Llama,
        *,
        num_blocks: int,
        block_size: int,
        max_num_seqs: int,
        max_model_len: int,
        use_cuda_graphs: bool | None = None,
    ) -> None:
        self.model = model
        self.block_size = block_size
        self.num_blocks = num_blocks
        self.max_num_seqs = max_num_seqs
        self.max_model_len = max_model_len
        weight = next(model.parameters())
        self.device = weight.device
        self.dtype = weight.dtype
        config = model.config
        shape = (num_blocks, block_size, config.num_kv_heads, config.head_dim)
        self.kv_caches: list[tuple[torch.Tensor, torch.Tensor]] = [
            (
                torch.zeros(shape, dtype=self.dtype, device=self.device),
                torch.zeros(shape, dtype=self.dtype, device=self.device),
            )
            for _ in range(config.num_layers)
        ]
        self.kv_cache_bytes = 2 * config.num_layers * self.kv_caches[0][0].nbytes
        seen: set[int] = set()
        self.weights_bytes = 0
        for tensor in itertools.chain(model.parameters(), model.buffers()):
            if tensor.data_ptr() not in seen:  # tied embeddings count once
                seen.add(tensor.data_ptr())
                self.weights_bytes += tensor.numel() * tensor.element_size()
        self._graphs: dict[int, _Graph] = {}
        self._graph_pool: Any = None
        if use_cuda_graphs is None:
            use_cuda_graphs = self.device.type == "cuda"
        if use_cuda_graphs:
            if self.device.type != "cuda":
                raise ValueError("CUDA graphs need a CUDA device")
            self.capture_cuda_graphs()

    # Eager path ---------------------------------------------------------------------------

    def execute(self, out: SchedulerOutput) -> StepResult:
        """Run one scheduled step: write KV, compute logits where a token is due, sample."""
        with torch.inference_mode():
            hidden_rows = self._forward(out)
            sampling = [i for i, chunk in enumerate(out.chunks) if chunk.samples]
            token_ids: list[int | None] = [None] * len(out.chunks)
            logprobs: list[TokenLogprob | None] = [None] * len(out.chunks)
            if not sampling:
                return StepResult(token_ids, logprobs)
            index = torch.tensor(sampling, dtype=torch.long).to(self.device)
            logits = self.model.compute_logits(hidden_rows.index_select(0, index))
            seqs = [out.chunks[i].seq for i in sampling]
            constrained = [row for row, s in enumerate(seqs) if s.matcher is not None]
            masks = None
            if constrained:
                masks = (constrained, self._grammar_masks([seqs[row] for row in constrained]))
            result = sample_tokens(
                logits,
                [s.params for s in seqs],
                [s.seed for s in seqs],
                [s.num_output_tokens for s in seqs],
                [s.prompt_token_ids if s.params.repetition_penalty != 1.0 else [] for s in seqs],
                [s.output_token_ids if s.params.has_penalties else [] for s in seqs],
                masks,
            )
            for row in constrained:
                matcher = seqs[row].matcher
                assert matcher is not None
                matcher.accept(result.token_ids[row])
        for row, i in enumerate(sampling):
            token_ids[i] = result.token_ids[row]
            logprobs[i] = result.logprobs[row]
        return StepResult(token_ids, logprobs)

    def _grammar_masks(self, seqs: list[Sequence]) -> torch.Tensor:
        """(rows, words) int32 bitmasks of the tokens each sequence's grammar allows next."""
        words = -(-self.model.config.vocab_size // 32)
        masks = torch.empty((len(seqs), words), dtype=torch.int32)
        for row, seq in enumerate(seqs):
            assert seq.matcher is not None
            seq.matcher.fill_mask(masks[row])
        return masks

    def _forward(self, out: SchedulerOutput) -> torch.Tensor:
        """Hidden states of each chunk's last token: (num_chunks, hidden_size)."""
        if out.is_decode and self._graphs and len(out.chunks) <= max(self._graphs):
            return self._replay(out)
        input_ids: list[int] = []
        positions: list[int] = []
        slots: list[int] = []
        cu_seqlens = [0]
        seq_lens: list[int] = []
        bs = self.block_size
        for chunk in out.chunks:
            seq = chunk.seq
            input_ids += seq.token_ids[chunk.start : chunk.end]
            span = range(chunk.start, chunk.end)
            positions += span
            table = seq.block_table
            slots += [table[p // bs] * bs + p % bs for p in span]
            cu_seqlens.append(cu_seqlens[-1] + chunk.num_tokens)
            seq_lens.append(chunk.end)
        width = max(-(-n // bs) for n in seq_lens)
        tables = [
            c.seq.block_table[:width] + [0] * (width - len(c.seq.block_table[:width]))
            for c in out.chunks
        ]
        meta = AttentionMetadata(
            is_decode=out.is_decode,
            slot_mapping=self._tensor(slots, torch.int64),
            cu_seqlens_q=self._tensor(cu_seqlens, torch.int32),
            seq_lens=self._tensor(seq_lens, torch.int32),
            block_tables=self._tensor(tables, torch.int32),
            max_seqlen_q=max(c.num_tokens for c in out.chunks),
            max_seqlen_k=max(seq_lens),
        )
        hidden = self.model.forward_paged(
            self._tensor(input_ids, torch.int64),
            self._tensor(positions, torch.int64),
            meta,
            self.kv_caches,
        )
        last = self._tensor([end - 1 for end in cu_seqlens[1:]], torch.int64)
        return hidden.index_select(0, last)

    def _tensor(self, values: list[Any], dtype: torch.dtype) -> torch.Tensor:
        tensor = torch.tensor(values, dtype=dtype)
        if self.device.type == "cuda":
            return tensor.pin_memory().to(self.device, non_blocking=True)
        return tensor

    # CUDA graphs --------------------------------------------------------------------------

    @property
    def graph_batch_sizes(self) -> list[int]:
        """Decode batch sizes with a captured CUDA graph (empty when decoding eagerly)."""
        return sorted(self._graphs)

    def capture_cuda_graphs(self) -> None:
        """Capture one decode graph per batch-size bucket up to `max_num_seqs`, largest first.

        The graphs share one memory pool. If capture fails (a kernel that synchronises with the
        host, say), decode stays eager and the reason is logged.
        """
        sizes = [b for b in GRAPH_BATCH_SIZES if b < self.max_num_seqs] + [self.max_num_seqs]
        sizes = sorted(set(sizes), reverse=True)
        width = -(-self.max_model_len // self.block_size)
        try:
            with torch.inference_mode():
                for size in sizes:
                    self._graphs[size] = self._capture(size, width)
        except Exception as error:  # capture is an optimisation; eager decode stays correct
            logger.warning("CUDA graph capture failed, decoding eagerly: %s", error)
            self._graphs.clear()
            self._graph_pool = None

    def _capture(self, size: int, width: int) -> _Graph:
        device = self.device
        input_ids = torch.zeros(size, dtype=torch.int64, device=device)
        positions = torch.zeros(size, dtype=torch.int64, device=device)
        slot_mapping = torch.full((size,), -1, dtype=torch.int64, device=device)
        seq_lens = torch.zeros(size, dtype=torch.int32, device=device)
        block_tables = torch.zeros((size, width), dtype=torch.int32, device=device)
        meta = AttentionMetadata(
            is_decode=True,
            slot_mapping=slot_mapping,
            cu_seqlens_q=torch.arange(size + 1, dtype=torch.int32, device=device),
            seq_lens=seq_lens,
            block_tables=block_tables,
            max_seqlen_q=1,
            max_seqlen_k=self.max_model_len,
        )
        # Warm-up compiles the kernels outside the capture; seq_len 1 reads block 0 only.
        seq_lens.fill_(1)
        self.model.forward_paged(input_ids, positions, meta, self.kv_caches)
        seq_lens.zero_()
        torch.cuda.synchronize(device)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._graph_pool):
            hidden = self.model.forward_paged(input_ids, positions, meta, self.kv_caches)
        if self._graph_pool is None:
            self._graph_pool = graph.pool()
        return _Graph(
            graph, size, input_ids, positions, slot_mapping, seq_lens, block_tables, hidden
        )

    def _replay(self, out: SchedulerOutput) -> torch.Tensor:
        count = len(out.chunks)
        graph = self._graphs[min(size for size in self._graphs if size >= count)]
        bs = self.block_size
        input_ids, positions, slots, seq_lens = [], [], [], []
        width = graph.block_tables.shape[1]
        tables = []
        for chunk in out.chunks:
            seq, position = chunk.seq, chunk.start
            input_ids.append(seq.token_ids[position])
            positions.append(position)
            slots.append(seq.block_table[position // bs] * bs + position % bs)
            seq_lens.append(chunk.end)
            tables.append(seq.block_table + [0] * (width - len(seq.block_table)))
        pad = graph.batch_size - count
        graph.input_ids.copy_(self._tensor(input_ids + [0] * pad, torch.int64))
        graph.positions.copy_(self._tensor(positions + [0] * pad, torch.int64))
        graph.slot_mapping.copy_(self._tensor(slots + [-1] * pad, torch.int64))
        graph.seq_lens.copy_(self._tensor(seq_lens + [0] * pad, torch.int32))
        graph.block_tables.copy_(self._tensor(tables + [[0] * width] * pad, torch.int32))
        graph.graph.replay()
        return graph.hidden[:count]

    def close(self) -> None:
        """Drop the KV cache and the graphs so their memory can be returned."""
        self._graphs.clear()
        self._graph_pool = None
        if self.model.fused_decoder is not None:  # it holds views of the cache
            self.model.fused_decoder.release()
        self.kv_caches = []
