"""BERT-family encoders (BERT, MiniLM, the sentence-transformers models built on them).

Post-norm transformer blocks over word + position + token-type embeddings, bidirectional
attention with a padding mask, GELU feed-forward (Devlin et al., 2018). The output is the last
hidden state; pooling into one vector per text is `cortex.engine.embedder`'s business.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from cortex.engine.safetensors import load_checkpoint
from cortex.errors import CortexError

__all__ = ["Bert", "BertConfig", "load_bert"]


@dataclass(frozen=True)
class BertConfig:
    """The fields of a BERT `config.json` the encoder needs."""

    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    max_positions: int
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0

    @classmethod
    def from_json(cls, config: dict[str, Any]) -> BertConfig:
        """Read a Hugging Face `config.json` (absolute position embeddings, GELU only)."""
        if config.get("position_embedding_type", "absolute") != "absolute":
            raise CortexError("only absolute position embeddings are supported")
        if config.get("hidden_act", "gelu") != "gelu":
            raise CortexError(f"hidden_act {config.get('hidden_act')!r} is not supported")
        return cls(
            vocab_size=int(config["vocab_size"]),
            hidden_size=int(config["hidden_size"]),
            num_layers=int(config["num_hidden_layers"]),
            num_heads=int(config["num_attention_heads"]),
            intermediate_size=int(config["intermediate_size"]),
            max_positions=int(config.get("max_position_embeddings", 512)),
            type_vocab_size=int(config.get("type_vocab_size", 2)),
            layer_norm_eps=float(config.get("layer_norm_eps", 1e-12)),
            pad_token_id=int(config.get("pad_token_id") or 0),
        )


class Embeddings(nn.Module):
    """Word + position + token-type embeddings, then LayerNorm."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.position_embeddings = nn.Embedding(config.max_positions, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        # input_ids: (batch, seq); every token is of segment 0 (one text per row)
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions)
        x = x + self.token_type_embeddings.weight[0]
        return self.LayerNorm(x)  # type: ignore[no-any-return]


class Attention(nn.Module):
    """Bidirectional multi-head self-attention, then the output projection."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.num_heads = config.num_heads
        self.head_dim = config.hidden_size // config.num_heads
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.output = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        batch, seq, _ = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:  # (batch, heads, seq, head_dim)
            return t.view(batch, seq, self.num_heads, self.head_dim).transpose(1, 2)

        q, k, v = heads(self.query(x)), heads(self.key(x)), heads(self.value(x))
        # mask: (batch, 1, 1, seq), True where a key is a real token
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.output(out.transpose(1, 2).reshape(batch, seq, -1))  # type: ignore[no-any-return]


class EncoderBlock(nn.Module):
    """Post-norm block: x = LN(x + Attention(x)); x = LN(x + MLP(x))."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.attention = Attention(config)
        self.attention_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.up = nn.Linear(config.hidden_size, config.intermediate_size)
        self.down = nn.Linear(config.intermediate_size, config.hidden_size)
        self.mlp_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.attention_norm(x + self.attention(x, mask))
        return self.mlp_norm(x + self.down(F.gelu(self.up(x))))  # type: ignore[no-any-return]


class Bert(nn.Module):
    """A BERT encoder: token ids in, the last hidden state out."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.layers = nn.ModuleList(EncoderBlock(config) for _ in range(config.num_layers))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(batch, seq) ids and 0/1 mask -> (batch, seq, hidden) states."""
        mask = attention_mask.bool()[:, None, None, :]
        x = self.embeddings(input_ids)
        for layer in self.layers:
            x = layer(x, mask)
        return x  # type: ignore[no-any-return]


# Hugging Face's names -> ours, within one encoder layer.
_LAYER_NAMES = {
    "attention.self.query": "attention.query",
    "attention.self.key": "attention.key",
    "attention.self.value": "attention.value",
    "attention.output.dense": "attention.output",
    "attention.output.LayerNorm": "attention_norm",
    "intermediate.dense": "up",
    "output.dense": "down",
    "output.LayerNorm": "mlp_norm",
}


def _our_name(name: str) -> str | None:
    """A checkpoint tensor's name in `Bert`, or None for tensors it does not use."""
    name = name.removeprefix("bert.")
    if name.startswith("embeddings."):
        return None if name.endswith("position_ids") else name
    if not name.startswith("encoder.layer."):
        return None  # the pooler and any task head
    _, _, index, rest = name.split(".", 3)
    module, _, leaf = rest.rpartition(".")
    mapped = _LAYER_NAMES.get(module)
    return None if mapped is None else f"layers.{index}.{mapped}.{leaf}"


def load_bert(
    model_dir: str | Path, *, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
) -> Bert:
    """Build a `Bert` from a Hugging Face folder, weights read by cortex's safetensors loader.

    Raises:
        CortexError: an unsupported config, or a weight missing or of the wrong shape.
    """
    model_dir = Path(model_dir)
    config = BertConfig.from_json(json.loads((model_dir / "config.json").read_text()))
    with torch.device("meta"):
        model = Bert(config)
    dtype = dtype or torch.float32
    state = {
        ours: tensor
        for name, tensor in load_checkpoint(model_dir, device, dtype)
        if (ours := _our_name(name)) is not None
    }
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    if missing:
        raise CortexError(f"{model_dir}: weights missing from the checkpoint: {missing[:4]}")
    for name, tensor in state.items():
        if name in expected and tensor.shape != expected[name].shape:
            raise CortexError(f"{model_dir}: {name} has shape {tuple(tensor.shape)}")
    model.load_state_dict({k: v for k, v in state.items() if k in expected}, assign=True)
    return model.eval()
