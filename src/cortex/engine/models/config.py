"""`LlamaConfig`: what the Llama-family forward pass needs from a Hugging Face `config.json`."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cortex.errors import CortexError

__all__ = ["SUPPORTED_MODEL_TYPES", "LlamaConfig"]

# Hugging Face `model_type`s that share the Llama layout (SmolLM is `llama`).
SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2")
_SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3")


@dataclass(frozen=True)
class LlamaConfig:
    """The shape and numerics of a Llama-family decoder.

    Attributes:
        model_type: `llama`, `mistral` or `qwen2`.
        vocab_size: rows of the embedding and of the LM head.
        hidden_size: width of the residual stream.
        intermediate_size: width of the SwiGLU MLP.
        num_layers: transformer blocks.
        num_heads: query heads.
        num_kv_heads: key/value heads (grouped-query attention when fewer than `num_heads`).
        head_dim: width of one head.
        max_position_embeddings: positions the model was trained for.
        rms_norm_eps: epsilon of every RMSNorm.
        rope_theta: base of the rotary frequencies.
        rope_scaling: the `rope_type` and its parameters (`linear`, `llama3`), or None.
        qkv_bias: q/k/v projections carry a bias (Qwen2, or Llama's `attention_bias`).
        o_bias: the output projection carries a bias (Llama's `attention_bias`).
        mlp_bias: the MLP projections carry a bias.
        tie_word_embeddings: the LM head reuses the embedding matrix.
        sliding_window: attention window when the model uses one (Mistral v0.1), else None.
        eos_token_ids: tokens that end a turn (config.json and generation_config.json).
        bos_token_id: the beginning-of-sequence token, if any.
        torch_dtype: the dtype the checkpoint was published in, e.g. `bfloat16`.
    """

    model_type: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    max_position_embeddings: int
    rms_norm_eps: float
    rope_theta: float
    rope_scaling: dict[str, Any] | None = None
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    tie_word_embeddings: bool = False
    sliding_window: int | None = None
    eos_token_ids: tuple[int, ...] = ()
    bos_token_id: int | None = None
    torch_dtype: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def context_length(self) -> int:
        """Longest sequence this implementation runs exactly.

        A sliding window is not implemented, so a model that has one is limited to its window,
        where full attention and windowed attention agree.
        """
        if self.sliding_window is not None:
            return min(self.max_position_embeddings, self.sliding_window)
        return self.max_position_embeddings

    @property
    def architecture(self) -> str:
        """The Hugging Face architecture name, e.g. `LlamaForCausalLM`."""
        names = self.extra.get("architectures")
        if isinstance(names, list) and names:
            return str(names[0])
        return {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM"}.get(
            self.model_type, "Qwen2ForCausalLM"
        )

    @classmethod
    def from_dict(
        cls, raw: dict[str, Any], generation: dict[str, Any] | None = None
    ) -> LlamaConfig:
        """Build from the parsed `config.json` (and optionally `generation_config.json`).

        Raises:
            CortexError: the model type, activation or rope scaling is not supported.
        """
        model_type = str(raw.get("model_type", "llama"))
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise CortexError(
                f"model_type {model_type!r} is not supported; "
                f"supported: {', '.join(SUPPORTED_MODEL_TYPES)}"
            )
        activation = raw.get("hidden_act", "silu")
        if activation != "silu":
            raise CortexError(f"hidden_act {activation!r} is not supported (only silu)")
        hidden_size = int(raw["hidden_size"])
        num_heads = int(raw["num_attention_heads"])
        rope_theta, rope_scaling = _rope_settings(raw)
        attention_bias = bool(raw.get("attention_bias", False))
        sliding_window = raw.get("sliding_window")
        if model_type == "qwen2" and not raw.get("use_sliding_window", False):
            sliding_window = None
        eos: list[int] = []
        for source in (raw, generation or {}):
            eos.extend(_as_ids(source.get("eos_token_id")))
        bos = raw.get("bos_token_id")
        return cls(
            model_type=model_type,
            vocab_size=int(raw["vocab_size"]),
            hidden_size=hidden_size,
            intermediate_size=int(raw["intermediate_size"]),
            num_layers=int(raw["num_hidden_layers"]),
            num_heads=num_heads,
            num_kv_heads=int(raw.get("num_key_value_heads") or num_heads),
            head_dim=int(raw.get("head_dim") or hidden_size // num_heads),
            max_position_embeddings=int(raw.get("max_position_embeddings", 2048)),
            rms_norm_eps=float(raw.get("rms_norm_eps", 1e-6)),
            rope_theta=rope_theta,
            rope_scaling=rope_scaling,
            qkv_bias=model_type == "qwen2" or attention_bias,
            o_bias=model_type == "llama" and attention_bias,
            mlp_bias=bool(raw.get("mlp_bias", False)),
            tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
            sliding_window=int(sliding_window) if sliding_window else None,
            eos_token_ids=tuple(dict.fromkeys(eos)),
            bos_token_id=int(bos) if isinstance(bos, int) else None,
            torch_dtype=raw.get("torch_dtype") or raw.get("dtype"),
            extra=raw,
        )

    @classmethod
    def from_dir(cls, model_dir: str | Path) -> LlamaConfig:
        """Read `config.json` and, when present, `generation_config.json` from a model directory.

        Raises:
            CortexError: the directory has no readable config.json, or the model is unsupported.
        """
        model_dir = Path(model_dir)
        try:
            raw = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CortexError(f"{model_dir}: cannot read config.json: {exc}") from exc
        generation: dict[str, Any] | None = None
        generation_path = model_dir / "generation_config.json"
        if generation_path.is_file():
            try:
                generation = json.loads(generation_path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise CortexError(f"{generation_path}: unreadable: {exc}") from exc
        return cls.from_dict(raw, generation)


def _as_ids(value: object) -> list[int]:
    if isinstance(value, int):
        return [value]
    if isinstance(value, list):
        return [int(v) for v in value if isinstance(v, int)]
    return []


def _rope_settings(raw: dict[str, Any]) -> tuple[float, dict[str, Any] | None]:
    """Rope base and scaling, from the classic keys or transformers 5's `rope_parameters`."""
    parameters = raw.get("rope_parameters")
    if isinstance(parameters, dict):
        theta = float(parameters.get("rope_theta", raw.get("rope_theta", 10000.0)))
        scaling: dict[str, Any] | None = dict(parameters)
    else:
        theta = float(raw.get("rope_theta", 10000.0))
        scaling = dict(raw["rope_scaling"]) if isinstance(raw.get("rope_scaling"), dict) else None
    if scaling is None:
        return theta, None
    rope_type = scaling.get("rope_type", scaling.get("type", "default"))
    if rope_type not in _SUPPORTED_ROPE_TYPES:
        raise CortexError(
            f"rope scaling {rope_type!r} is not supported; "
            f"supported: {', '.join(_SUPPORTED_ROPE_TYPES)}"
        )
    if rope_type == "default":
        return theta, None
    canonical: dict[str, Any] = {"rope_type": rope_type, "factor": float(scaling["factor"])}
    if rope_type == "llama3":
        canonical["low_freq_factor"] = float(scaling["low_freq_factor"])
        canonical["high_freq_factor"] = float(scaling["high_freq_factor"])
        canonical["original_max_position_embeddings"] = int(
            scaling.get(
                "original_max_position_embeddings", raw.get("max_position_embeddings", 2048)
            )
        )
    return theta, canonical
