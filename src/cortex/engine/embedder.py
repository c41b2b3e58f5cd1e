"""`Embedder`: texts (or token ids) in, one vector each out, as sentence-transformers makes them.

The folder is a sentence-transformers model: a BERT-family encoder (`config.json`,
`model.safetensors`, `tokenizer.json`), its pooling (`1_Pooling/config.json`: mean, CLS, max
or mean-sqrt-len over the real tokens), whether vectors are L2-normalised (a
`sentence_transformers.models.Normalize` module in `modules.json`), and the longest input
(`sentence_bert_config.json` `max_seq_length`; longer inputs are truncated, as there), and
whether its vectors may be shortened: only a Matryoshka-trained model's first components are a
good vector on their own, and its model card says so (`matryoshka_dims`).
Inputs are sorted by length and run in batches of similar lengths, so padding stays small.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tokenizers
import torch

from cortex.engine.models.bert import Bert, load_bert
from cortex.errors import CortexError, InvalidRequestError

__all__ = ["Embedder", "Pooling", "matryoshka_dims"]

_POOLING_MODES = ("cls_token", "mean_tokens", "max_tokens", "mean_sqrt_len_tokens")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise CortexError(f"{path}: {error}") from error


# Model-card tags of Matryoshka training (sentence-transformers writes `loss:<LossClass>`).
_MATRYOSHKA_TAGS = frozenset({"matryoshka", "loss:matryoshkaloss", "loss:matryoshka2dloss"})
_DIMS = re.compile(r"""["']?matryoshka_dims["']?\s*[:=]\s*\[([\d,\s]+)\]""")


def _front_matter_tags(card: str) -> set[str]:
    """The `tags` of a model card's YAML front matter, lowercased (no YAML parser needed:
    the hub writes them as a block list or an inline one)."""
    lines = card.splitlines()
    if not lines or lines[0].strip() != "---":
        return set()
    tags: set[str] = set()
    in_tags = False
    for line in lines[1:]:
        if line.strip() == "---":
            break
        if line.startswith("tags:"):
            inline = line[len("tags:") :].strip()
            if inline.startswith("["):
                tags |= {t.strip().strip("'\"").lower() for t in inline.strip("[]").split(",")}
            in_tags = not inline
        elif in_tags and line.lstrip().startswith("- "):
            tags.add(line.lstrip()[2:].strip().strip("'\"").lower())
        elif in_tags and line.strip():
            in_tags = False
    return tags


def matryoshka_dims(model_dir: Path) -> tuple[int, ...] | None:
    """The dimensions a Matryoshka-trained model was trained at, from its model card.

    Returns None when the card (`README.md`) does not declare Matryoshka training (a
    `matryoshka` or `loss:MatryoshkaLoss` tag, or the loss's `matryoshka_dims`); an empty
    tuple when it declares it without listing the dimensions.
    """
    try:
        card = (model_dir / "README.md").read_text(errors="replace")
    except OSError:
        return None
    listed = _DIMS.search(card)
    if listed is not None:
        dims = {int(d) for d in listed.group(1).split(",") if d.strip()}
        return tuple(sorted(d for d in dims if d > 0))
    if _front_matter_tags(card) & _MATRYOSHKA_TAGS:
        return ()
    return None


@dataclass(frozen=True)
class Pooling:
    """How token states become one vector: `mode` over the real tokens, then `normalize`."""

    mode: str = "mean_tokens"
    normalize: bool = False

    @classmethod
    def from_dir(cls, model_dir: Path) -> Pooling:
        """Read sentence-transformers' `modules.json` and pooling config (mean when absent)."""
        modules = _read_json(model_dir / "modules.json") or []
        mode, normalize = "mean_tokens", False
        for module in modules:
            kind = str(module.get("type", ""))
            if kind.endswith(".Pooling"):
                config = _read_json(model_dir / module.get("path", "") / "config.json") or {}
                modes = [m for m in _POOLING_MODES if config.get(f"pooling_mode_{m}")]
                if len(modes) != 1:
                    raise CortexError(f"{model_dir}: pooling {modes or 'none'} is not supported")
                mode = modes[0]
            elif kind.endswith(".Normalize"):
                normalize = True
        return cls(mode, normalize)

    def __call__(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(batch, seq, hidden) states and (batch, seq) 0/1 mask -> (batch, hidden)."""
        keep = mask.unsqueeze(-1).to(states.dtype)
        if self.mode == "cls_token":
            pooled = states[:, 0]
        elif self.mode == "max_tokens":
            pooled = states.masked_fill(keep == 0, float("-inf")).amax(dim=1)
        else:
            total = (states * keep).sum(dim=1)
            count = keep.sum(dim=1).clamp(min=1e-9)
            pooled = total / (count.sqrt() if self.mode == "mean_sqrt_len_tokens" else count)
        if self.normalize:
            pooled = torch.nn.functional.normalize(pooled, p=2.0, dim=-1)
        return pooled


class Embedder:
    """An embedding model, loaded: tokenizer, encoder and pooling.

    Build one with `Embedder.from_pretrained`. `embed` is thread-safe (one batch at a time).

    Args:
        model: the encoder.
        tokenizer: its tokenizer (`tokenizers.Tokenizer`, with its special tokens added).
        pooling: how token states become one vector.
        max_tokens: inputs longer than this are truncated.
        batch_size: texts per forward pass.
        matryoshka: the dimensions the model was trained to be shortened to (`matryoshka_dims`;
            empty: any); None when its vectors cannot be shortened meaningfully.
    """

    def __init__(
        self,
        model: Bert,
        tokenizer: tokenizers.Tokenizer,
        pooling: Pooling,
        *,
        max_tokens: int,
        batch_size: int = 32,
        matryoshka: tuple[int, ...] | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.max_tokens = max_tokens
        self.batch_size = batch_size
        self.matryoshka = matryoshka
        self.dimensions = model.config.hidden_size
        self.vocab_size = model.config.vocab_size
        weight = next(model.parameters())
        self.device, self.dtype = weight.device, weight.dtype
        self.weights_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
        self._lock = threading.Lock()

    @classmethod
    def from_pretrained(
        cls,
        model_dir: str | Path,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
        batch_size: int = 32,
    ) -> Embedder:
        """Load a sentence-transformers folder.

        Raises:
            CortexError: a missing tokenizer, an unsupported config or pooling.
        """
        model_dir = Path(model_dir)
        model = load_bert(model_dir, device=device, dtype=dtype)
        try:
            tokenizer = tokenizers.Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        except Exception as error:  # tokenizers raises its own Exception types
            raise CortexError(f"{model_dir}: cannot load tokenizer.json: {error}") from error
        limit = (_read_json(model_dir / "sentence_bert_config.json") or {}).get("max_seq_length")
        max_tokens = min(int(limit or model.config.max_positions), model.config.max_positions)
        tokenizer.no_padding()
        tokenizer.no_truncation()
        return cls(
            model,
            tokenizer,
            Pooling.from_dir(model_dir),
            max_tokens=max_tokens,
            batch_size=batch_size,
            matryoshka=matryoshka_dims(model_dir),
        )

    def tokenize(self, inputs: Sequence[str] | Sequence[Sequence[int]]) -> list[list[int]]:
        """Each input's token ids, special tokens added to texts, truncated to `max_tokens`.

        Raises:
            InvalidRequestError: an empty input, or token ids outside the vocabulary.
        """
        if not inputs:
            raise InvalidRequestError("input: give at least one text", param="input")
        ids: list[list[int]] = []
        for item in inputs:
            if isinstance(item, str):
                encoded = self.tokenizer.encode(item, add_special_tokens=True).ids
                if len(encoded) > self.max_tokens:  # keep the closing [SEP]
                    encoded = encoded[: self.max_tokens - 1] + encoded[-1:]
                ids.append(encoded)
            else:
                tokens = [int(t) for t in item]
                if not tokens or any(not 0 <= t < self.vocab_size for t in tokens):
                    raise InvalidRequestError(
                        f"input: token ids must be non-empty and in [0, {self.vocab_size})",
                        param="input",
                    )
                ids.append(tokens[: self.max_tokens])
        return ids

    def embed(self, ids: Sequence[Sequence[int]]) -> torch.Tensor:
        """(len(ids), dimensions) float32 vectors on the CPU, in the order of `ids`."""
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        out = torch.empty((len(ids), self.dimensions), dtype=torch.float32)
        pad = self.model.config.pad_token_id
        with self._lock, torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                rows = order[start : start + self.batch_size]
                width = max(len(ids[i]) for i in rows)
                batch = torch.full((len(rows), width), pad, dtype=torch.long)
                mask = torch.zeros((len(rows), width), dtype=torch.long)
                for row, i in enumerate(rows):
                    batch[row, : len(ids[i])] = torch.tensor(ids[i])
                    mask[row, : len(ids[i])] = 1
                batch, mask = batch.to(self.device), mask.to(self.device)
                states = self.model(batch, mask)
                out[rows] = self.pooling(states.float(), mask).cpu()
        return out
