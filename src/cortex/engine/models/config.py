"""`LlamaConfig`: what the Llama-family forward pass (dense or MoE) needs from a `config.json`."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cortex.errors import CortexError

__all__ = ["SUPPORTED_MODEL_TYPES", "LlamaConfig"]

# Hugging Face `model_type`s that share the Llama layout (SmolLM is `llama`); Qwen3 adds a
# per-head RMSNorm on q and k, Qwen3-MoE a sparse mixture-of-experts MLP on top of that.
SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3", "qwen3_moe")
_QK_NORM_TYPES = ("qwen3", "qwen3_moe")
_ARCHITECTURES = {
    "llama": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
    "qwen3_moe": "Qwen3MoeForCausalLM",
}
_SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3")


@dataclass(frozen=True)
class LlamaConfig:
    """The shape and numerics of a Llama-family decoder.

    Attributes:
        model_type: one of `SUPPORTED_MODEL_TYPES`.
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
        layer_windows: per layer, the window that layer attends over (query `i` sees keys
            `i - window + 1 .. i`), or None for full attention; empty when no layer has one.
        qk_norm: q and k are RMS-normalised per head before the rotation (Qwen3).
        num_experts: experts of each sparse MLP (Qwen3-MoE), 0 for a dense model.
        num_experts_per_tok: experts each token is routed to (top-k).
        moe_intermediate_size: width of one expert's SwiGLU MLP.
        norm_topk_prob: the top-k routing weights are renormalised to sum to one.
        decoder_sparse_step: every this-many-th layer is sparse (layer `i` when
            `(i + 1) % step == 0`), unless listed in `mlp_only_layers`.
        mlp_only_layers: layers that keep a dense MLP in a MoE model.
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
    layer_windows: tuple[int | None, ...] = ()
    qk_norm: bool = False
    num_experts: int = 0
    num_experts_per_tok: int = 0
    moe_intermediate_size: int = 0
    norm_topk_prob: bool = False
    decoder_sparse_step: int = 1
    mlp_only_layers: tuple[int, ...] = ()
    eos_token_ids: tuple[int, ...] = ()
    bos_token_id: int | None = None
    torch_dtype: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def context_length(self) -> int:
        """Longest sequence this implementation runs (sliding windows are masked, not clipped)."""
        return self.max_position_embeddings

    def window(self, layer: int) -> int | None:
        """The sliding window of block `layer`, or None when it attends over everything."""
        return self.layer_windows[layer] if self.layer_windows else None

    def is_sparse(self, layer: int) -> bool:
        """Whether block `layer` has a mixture-of-experts MLP (Qwen3-MoE's placement rule)."""
        return (
            self.num_experts > 0
            and layer not in self.mlp_only_layers
            and (layer + 1) % self.decoder_sparse_step == 0
        )

    @property
    def architecture(self) -> str:
        """The Hugging Face architecture name, e.g. `LlamaForCausalLM`."""
        names = self.extra.get("architectures")
        if isinstance(names, list) and names:
            return str(names[0])
        return _ARCHITECTURES[self.model_type]

    @property
    def parameters(self) -> int:
        """Every weight of the model (a tied LM head counted once)."""
        return self._count(active=False)

    @property
    def active_parameters(self) -> int:
        """The weights one token runs through: a MoE layer counts only its top-k experts."""
        return self._count(active=True)

    def _count(self, *, active: bool) -> int:
        hidden, head_dim = self.hidden_size, self.head_dim
        q, kv = self.num_heads * head_dim, self.num_kv_heads * head_dim
        attention = hidden * (q + 2 * kv) + q * hidden + 2 * hidden
        attention += (q + 2 * kv) * self.qkv_bias + hidden * self.o_bias
        attention += 2 * head_dim * self.qk_norm
        dense = 3 * hidden * self.intermediate_size
        dense += (2 * self.intermediate_size + hidden) * self.mlp_bias
        experts = self.num_experts_per_tok if active else self.num_experts
        sparse = self.num_experts * hidden + experts * 3 * hidden * self.moe_intermediate_size
        blocks = sum(
            attention + (sparse if self.is_sparse(i) else dense) for i in range(self.num_layers)
        )
        embeddings = self.vocab_size * hidden * (1 if self.tie_word_embeddings else 2)
        return blocks + embeddings + hidden

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
        num_layers = int(raw["num_hidden_layers"])
        sliding_window, layer_windows = _windows(raw, model_type, num_layers)
        moe = model_type == "qwen3_moe"
        eos: list[int] = []
        for source in (raw, generation or {}):
            eos.extend(_as_ids(source.get("eos_token_id")))
        bos = raw.get("bos_token_id")
        return cls(
            model_type=model_type,
            vocab_size=int(raw["vocab_size"]),
            hidden_size=hidden_size,
            intermediate_size=int(raw["intermediate_size"]),
            num_layers=num_layers,
            num_heads=num_heads,
            num_kv_heads=int(raw.get("num_key_value_heads") or num_heads),
            head_dim=int(raw.get("head_dim") or hidden_size // num_heads),
            max_position_embeddings=int(raw.get("max_position_embeddings", 2048)),
            rms_norm_eps=float(raw.get("rms_norm_eps", 1e-6)),
            rope_theta=rope_theta,
            rope_scaling=rope_scaling,
            qkv_bias=model_type == "qwen2" or attention_bias,
            o_bias=model_type in ("llama", "qwen3", "qwen3_moe") and attention_bias,
            mlp_bias=bool(raw.get("mlp_bias", False)),
            tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
            sliding_window=sliding_window,
            layer_windows=layer_windows,
            qk_norm=model_type in _QK_NORM_TYPES,
            num_experts=int(raw.get("num_experts") or raw.get("num_local_experts") or 0) * moe,
            num_experts_per_tok=int(raw.get("num_experts_per_tok") or 0) * moe,
            moe_intermediate_size=int(raw.get("moe_intermediate_size") or 0) * moe,
            norm_topk_prob=moe and bool(raw.get("norm_topk_prob", False)),
            decoder_sparse_step=int(raw.get("decoder_sparse_step") or 1),
            mlp_only_layers=tuple(int(i) for i in raw.get("mlp_only_layers") or ()),
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


def _windows(
    raw: dict[str, Any], model_type: str, num_layers: int
) -> tuple[int | None, tuple[int | None, ...]]:
    """The sliding window and, per layer, whether it applies, as transformers decides both.

    Mistral windows every layer. The Qwen families window only when `use_sliding_window` is
    set, then the layers `layer_types` names (else those from `max_window_layers` on); Qwen3-MoE
    passes its window to every layer.
    """
    window = raw.get("sliding_window")
    if model_type != "mistral" and not raw.get("use_sliding_window", False):
        window = None
    if not window:
        return None, ()
    window = int(window)
    if model_type in ("mistral", "qwen3_moe"):
        return window, (window,) * num_layers
    types = raw.get("layer_types")
    if not isinstance(types, list) or len(types) != num_layers:
        first = int(raw.get("max_window_layers", num_layers))
        types = ["sliding_attention" if i >= first else "full_attention" for i in range(num_layers)]
    windows = tuple(window if kind == "sliding_attention" else None for kind in types)
    return window, windows if any(windows) else ()


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
