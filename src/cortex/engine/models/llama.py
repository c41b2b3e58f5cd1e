"""The Llama family (Llama 2/3, Mistral, Qwen2, SmolLM): RMSNorm, rotary GQA attention, SwiGLU MLP.

Weights keep Hugging Face's layout, except that q/k/v and gate/up are fused into one matrix
each at load time, so a step runs two matmuls where it would run five (same sums, same result).

The seams other families build on (`qwen3.py`, `moe.py`): `Llama.make_block` chooses each
block's attention and MLP, `Attention.rotate_qk` turns the projected q/k into rotated heads, and
every module names the checkpoint tensors it holds (`weight_slots`).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cortex.engine.device import DtypePolicy
from cortex.engine.kernels.cpu_decode import FusedDecoder
from cortex.engine.kernels.metadata import AttentionMetadata
from cortex.engine.models.config import LlamaConfig
from cortex.engine.models.kv_cache import ContiguousKVCache, KVCache, NoCache, PagedKVCache
from cortex.engine.models.rope import apply_rotary, inverse_frequencies, rotary_table
from cortex.engine.quant import QuantizedTensor, QuantizedWeight, QuantRows
from cortex.errors import ContextLengthExceededError, CortexError, InvalidRequestError

__all__ = [
    "MLP",
    "Attention",
    "FeedForward",
    "Llama",
    "RMSNorm",
    "TransformerBlock",
    "linear",
]

_MV_DTYPES = (torch.float32, torch.bfloat16)  # float16 matrix-vector products are slow on CPU
_FUSED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _weight(shape: tuple[int, ...], device: torch.device | str, dtype: torch.dtype) -> nn.Parameter:
    # Filled by `Llama.load_weights`; inference only, so no gradients.
    return nn.Parameter(torch.empty(shape, device=device, dtype=dtype), requires_grad=False)


def linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    policy: DtypePolicy | None = None,
) -> torch.Tensor:
    """`x @ weight.T + bias` for x of shape (tokens, in_features), as `policy` says it runs fast.

    A single CPU row goes through `torch.mv` unless the policy measured `F.linear` faster for
    it (bfloat16 `mv` streams the weights 1.5x faster than `F.linear` on an Intel Xeon, several
    times slower on an AMD EPYC); decode at batch 1 is nothing but such rows. A block of at
    least `policy.prefill_min_rows` rows is multiplied in `policy.prefill_dtype` (weights
    widened for the call) and cast back: on CPUs without native bfloat16 math a float32 GEMM
    is several times faster than a bfloat16 one. See `cortex.engine.device`.
    """
    if isinstance(weight, QuantizedWeight):  # int8/int4: the weight-only kernels
        out = weight(x)
        return out if bias is None else out + bias
    rows = x.shape[0]
    if x.device.type == "cpu":
        if rows == 1 and x.dtype in _MV_DTYPES and (policy is None or policy.row_kernel == "mv"):
            row = x[0]
            out = torch.mv(weight, row) if bias is None else torch.addmv(bias, weight, row)
            return out.unsqueeze(0)
        if (
            policy is not None
            and rows >= policy.prefill_min_rows
            and weight.dtype != policy.prefill_dtype
        ):
            wide = policy.prefill_dtype
            b = None if bias is None else bias.to(wide)
            return F.linear(x.to(wide), weight.to(wide), b).to(x.dtype)
    return F.linear(x, weight, bias)


class RMSNorm(nn.Module):
    """Root-mean-square normalisation with a learned gain (no mean subtraction, no bias)."""

    def __init__(
        self, dim: int, eps: float, *, device: torch.device | str, dtype: torch.dtype
    ) -> None:
        super().__init__()
        self.weight = _weight((dim,), device, dtype)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # `x * rsqrt(mean(x^2) + eps) * weight`, normalised in float32 and cast back before the
        # gain, exactly as Hugging Face does (one fused op when the model is float32).
        if x.dtype == torch.float32:
            return F.rms_norm(x, self.weight.shape, self.weight, self.eps)
        return self.weight * F.rms_norm(x.float(), self.weight.shape, eps=self.eps).to(x.dtype)


class Attention(nn.Module):
    """Grouped-query self-attention with rotary positions; K/V storage is the cache's business."""

    def __init__(
        self, config: LlamaConfig, layer: int, *, device: torch.device | str, dtype: torch.dtype
    ) -> None:
        super().__init__()
        self.layer = layer
        self.window = config.window(layer)  # sliding window of this layer, None for full
        self.num_heads = config.num_heads
        self.num_kv_heads = config.num_kv_heads
        self.head_dim = config.head_dim
        q_width = config.num_heads * config.head_dim
        kv_width = config.num_kv_heads * config.head_dim
        self.qk_width = q_width + kv_width
        # Rows: q heads, then k heads, then v heads.
        self.qkv_weight = _weight((q_width + 2 * kv_width, config.hidden_size), device, dtype)
        self.qkv_bias = (
            _weight((q_width + 2 * kv_width,), device, dtype) if config.qkv_bias else None
        )
        self.o_weight = _weight((config.hidden_size, q_width), device, dtype)
        self.o_bias = _weight((config.hidden_size,), device, dtype) if config.o_bias else None
        self.policy: DtypePolicy | None = None  # set by `Llama.apply_policy`

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: KVCache
    ) -> torch.Tensor:
        tokens = x.shape[0]
        # (tokens, (heads + 2 kv_heads) head_dim)
        qkv = linear(x, self.qkv_weight, self.qkv_bias, self.policy)
        q, k = self.rotate_qk(qkv[:, : self.qk_width], cos, sin)  # (tokens, h|kv_h, head_dim)
        v = qkv[:, self.qk_width :].view(tokens, self.num_kv_heads, self.head_dim)
        out = cache.attend(self.layer, q, k, v, window=self.window)  # (tokens, heads, head_dim)
        return linear(out.reshape(tokens, -1), self.o_weight, self.o_bias, self.policy)

    def fused_qk_norms(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The gains of the per-head q and k norms `rotate_qk` applies before rotating, for the
        fused CPU decode step (`cortex.engine.kernels.cpu_decode`); None: it applies none."""
        return None

    def rotate_qk(
        self, qk: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(tokens, (heads + kv_heads) * head_dim) projections -> rotated q and k heads."""
        # q and k sit side by side, so one rotation covers both.
        qk = qk.view(qk.shape[0], self.num_heads + self.num_kv_heads, self.head_dim)
        qk = apply_rotary(qk, cos, sin)
        q, k = torch.split(qk, [self.num_heads, self.num_kv_heads], dim=1)
        return q, k

    def weight_slots(self, prefix: str) -> dict[str, torch.Tensor]:
        """Checkpoint names under `prefix` (`model.layers.N.self_attn.`) -> views they fill."""
        q_rows = self.num_heads * self.head_dim
        kv_rows = self.num_kv_heads * self.head_dim
        slots: dict[str, torch.Tensor] = {f"{prefix}o_proj.weight": self.o_weight}
        if self.o_bias is not None:
            slots[f"{prefix}o_proj.bias"] = self.o_bias
        for kind, tensor in {"weight": self.qkv_weight, "bias": self.qkv_bias}.items():
            if tensor is not None:
                slots[f"{prefix}q_proj.{kind}"] = tensor[:q_rows]
                slots[f"{prefix}k_proj.{kind}"] = tensor[q_rows : q_rows + kv_rows]
                slots[f"{prefix}v_proj.{kind}"] = tensor[q_rows + kv_rows :]
        return slots


class FeedForward(nn.Module):
    """What a block's MLP is: `(tokens, hidden) -> (tokens, hidden)`, naming its tensors."""

    def weight_slots(self, prefix: str) -> dict[str, torch.Tensor]:
        """Checkpoint names under `prefix` (`model.layers.N.mlp.`) -> views they fill."""
        raise NotImplementedError


class MLP(FeedForward):
    """SwiGLU: `down(silu(gate(x)) * up(x))`, with gate and up fused into one matmul."""

    def __init__(
        self, config: LlamaConfig, *, device: torch.device | str, dtype: torch.dtype
    ) -> None:
        super().__init__()
        width = config.intermediate_size
        self.gate_up_weight = _weight((2 * width, config.hidden_size), device, dtype)
        self.gate_up_bias = _weight((2 * width,), device, dtype) if config.mlp_bias else None
        self.down_weight = _weight((config.hidden_size, width), device, dtype)
        self.down_bias = _weight((config.hidden_size,), device, dtype) if config.mlp_bias else None
        self.policy: DtypePolicy | None = None  # set by `Llama.apply_policy`

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate_up = linear(x, self.gate_up_weight, self.gate_up_bias, self.policy)
        gate, up = gate_up.chunk(2, dim=-1)
        return linear(F.silu(gate) * up, self.down_weight, self.down_bias, self.policy)

    def weight_slots(self, prefix: str) -> dict[str, torch.Tensor]:
        """See `FeedForward.weight_slots`."""
        width = self.down_weight.shape[1]
        slots: dict[str, torch.Tensor] = {f"{prefix}down_proj.weight": self.down_weight}
        if self.down_bias is not None:
            slots[f"{prefix}down_proj.bias"] = self.down_bias
        for kind, tensor in {"weight": self.gate_up_weight, "bias": self.gate_up_bias}.items():
            if tensor is not None:
                slots[f"{prefix}gate_proj.{kind}"] = tensor[:width]
                slots[f"{prefix}up_proj.{kind}"] = tensor[width:]
        return slots


class TransformerBlock(nn.Module):
    """Pre-norm block: `x + attn(norm(x))`, then `x + mlp(norm(x))`.

    Args:
        attn: the attention layer; Llama's `Attention` when None.
        mlp: the MLP; Llama's SwiGLU `MLP` when None.
    """

    def __init__(
        self,
        config: LlamaConfig,
        layer: int,
        *,
        device: torch.device | str,
        dtype: torch.dtype,
        attn: Attention | None = None,
        mlp: FeedForward | None = None,
    ) -> None:
        super().__init__()
        eps = config.rms_norm_eps
        self.input_norm = RMSNorm(config.hidden_size, eps, device=device, dtype=dtype)
        self.attn = attn or Attention(config, layer, device=device, dtype=dtype)
        self.post_attention_norm = RMSNorm(config.hidden_size, eps, device=device, dtype=dtype)
        self.mlp: FeedForward = mlp or MLP(config, device=device, dtype=dtype)

    def weight_slots(self, prefix: str) -> dict[str, torch.Tensor]:
        """Checkpoint names under `prefix` (`model.layers.N.`) -> views they fill."""
        return {
            **self.attn.weight_slots(f"{prefix}self_attn."),
            **self.mlp.weight_slots(f"{prefix}mlp."),
            f"{prefix}input_layernorm.weight": self.input_norm.weight,
            f"{prefix}post_attention_layernorm.weight": self.post_attention_norm.weight,
        }

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: KVCache
    ) -> torch.Tensor:
        attended: torch.Tensor = self.attn(self.input_norm(x), cos, sin, cache)
        x = x + attended
        mixed: torch.Tensor = self.mlp(self.post_attention_norm(x))
        return x + mixed


class Llama(nn.Module):
    """A Llama-family decoder, built empty; `cortex.engine.load_model` fills it from a checkpoint.

    Args:
        config: the model's shape and numerics.
        device: where the weights live.
        dtype: the weights' and activations' dtype (logits are always float32).
    """

    def __init__(
        self, config: LlamaConfig, *, device: torch.device | str = "cpu", dtype: torch.dtype
    ) -> None:
        super().__init__()
        self.config = config
        self.embed_tokens = _weight((config.vocab_size, config.hidden_size), device, dtype)
        self.layers = nn.ModuleList(
            self.make_block(config, i, device=device, dtype=dtype) for i in range(config.num_layers)
        )
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps, device=device, dtype=dtype)
        if config.tie_word_embeddings:
            self.lm_head = self.embed_tokens
        else:
            self.lm_head = _weight((config.vocab_size, config.hidden_size), device, dtype)
        inv_freq = inverse_frequencies(config.head_dim, config.rope_theta, config.rope_scaling)
        table = rotary_table(inv_freq, config.context_length, dtype, device)
        self.rope_table: torch.Tensor  # (positions, 2, head_dim // 2): cos, sin
        self.register_buffer("rope_table", table, persistent=False)
        self.policy: DtypePolicy | None = None  # set by `apply_policy`
        self._fused: FusedDecoder | None = None  # built at the first CPU decode step
        self._fused_tried = False

    def make_block(
        self, config: LlamaConfig, layer: int, *, device: torch.device | str, dtype: torch.dtype
    ) -> TransformerBlock:
        """Block `layer`, empty; families with other attention or MLPs override this."""
        return TransformerBlock(config, layer, device=device, dtype=dtype)

    @property
    def device(self) -> torch.device:
        """Where the weights are."""
        return self.embed_tokens.device

    @property
    def dtype(self) -> torch.dtype:
        """The weights' and activations' dtype."""
        return self.embed_tokens.dtype

    def apply_policy(self, policy: DtypePolicy | None) -> None:
        """Run the matmuls as `policy` says (single-row kernel, prefill dtype); None: defaults.

        The weights stay in the model's dtype; see `cortex.engine.device.choose_policy`.
        """
        for module in self.modules():
            if isinstance(module, Attention | MLP):
                module.policy = policy
        self.policy = policy
        self._fused, self._fused_tried = None, False  # rebuilt for the new policy

    # -- the forward pass -------------------------------------------------------------------

    def hidden_states(
        self, input_ids: torch.Tensor, rope: torch.Tensor, cache: KVCache
    ) -> torch.Tensor:
        """Run every block and the final norm.

        Args:
            input_ids: (tokens,) int64.
            rope: (tokens, 2, head_dim // 2), the rows of `rope_table` at the tokens' positions.
            cache: where keys and values go.

        Returns:
            (tokens, hidden_size), normalised.
        """
        embed = self.embed_tokens
        if isinstance(embed, QuantizedWeight):
            x = embed.embedding(input_ids)  # (tokens, hidden_size)
        else:
            x = F.embedding(input_ids, embed)
        fused = self._fused_decoder(x)
        if fused is not None and fused.applies(x.shape[0]):
            layout = cache.decode_layout(x.shape[0])
            if layout is not None:  # a decode step: every block in one call
                return fused.step(x, rope, layout)
        cos, sin = rope[:, 0], rope[:, 1]
        for block in self.layers:
            x = block(x, cos, sin, cache)
        return self.norm(x)  # type: ignore[no-any-return]

    @property
    def fused_decoder(self) -> FusedDecoder | None:
        """The fused CPU decode step once a CPU decode step has built it; None otherwise."""
        return self._fused

    def _fused_decoder(self, x: torch.Tensor) -> FusedDecoder | None:
        """The fused CPU decode step of this model (`cortex.engine.kernels.cpu_decode`), built
        once; None on other devices or where it does not apply."""
        if x.device.type != "cpu" or not x.shape[0]:
            return None
        if not self._fused_tried:
            self._fused_tried = True
            self._fused = self._build_fused_decoder()
        return self._fused

    def _build_fused_decoder(self) -> FusedDecoder | None:
        """Hand every block to a `FusedDecoder`; None where one cannot run this model: not on
        CPU, a dtype other than float32/bfloat16/float16, a block that is not Llama's
        (attention whose rotation the fused step does not know, an MoE MLP), or no library."""
        if self.device.type != "cpu" or self.dtype not in _FUSED_DTYPES:
            return None
        blocks: list[tuple[TransformerBlock, Attention, MLP]] = []
        for block in self.layers:
            if not isinstance(block, TransformerBlock) or type(block.mlp) is not MLP:
                return None
            attn = block.attn
            if attn.fused_qk_norms() is None and type(attn).rotate_qk is not Attention.rotate_qk:
                return None
            blocks.append((block, attn, block.mlp))
        config = self.config
        fused = FusedDecoder.create(
            config.hidden_size,
            config.num_heads,
            config.num_kv_heads,
            config.head_dim,
            float(config.rms_norm_eps),
        )
        if fused is None:
            return None
        by_mv = self.dtype in _MV_DTYPES and (self.policy is None or self.policy.row_kernel == "mv")
        floats = False
        for index, (block, attn, mlp) in enumerate(blocks):
            norms = (block.input_norm.weight, block.post_attention_norm.weight)
            fused.add_layer(*norms, attn.fused_qk_norms(), attn.window)
            for which, weight, bias in (
                (FusedDecoder.QKV, attn.qkv_weight, attn.qkv_bias),
                (FusedDecoder.O, attn.o_weight, attn.o_bias),
                (FusedDecoder.GATE_UP, mlp.gate_up_weight, mlp.gate_up_bias),
                (FusedDecoder.DOWN, mlp.down_weight, mlp.down_bias),
            ):
                if isinstance(weight, QuantizedWeight):
                    weight.prepare()
                    packed = (weight.spec.bits, weight.scales, weight.group_size or 0)
                    rows = weight.out_features
                    fused.project(index, which, weight.qweight, bias, quantized=(*packed, rows))
                else:
                    floats = True
                    fused.project(index, which, weight, bias, use_mv=by_mv)
        assert isinstance(self.norm, RMSNorm)
        fused.set_final_norm(self.norm.weight)
        if floats and self.policy is not None:  # so many float rows are prefill to the policy
            fused.limit_float_rows(self.policy.prefill_min_rows)
        return fused

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """LM head: (N, hidden_size) -> (N, vocab_size) float32."""
        return linear(hidden, self.lm_head, None, self.policy).float()

    def forward(self, ids: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """Logits at every position of one sequence starting at position 0.

        Args:
            ids: token ids, a list or a (tokens,) tensor.

        Returns:
            (len(ids), vocab_size) float32.
        """
        input_ids = self._as_ids(ids)
        self._check_fits(len(input_ids), 0)
        with torch.inference_mode():
            rope = self.rope_table[: len(input_ids)]
            return self.compute_logits(self.hidden_states(input_ids, rope, NoCache()))

    def forward_paged(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        meta: AttentionMetadata,
        kv_caches: list[tuple[torch.Tensor, torch.Tensor]],
    ) -> torch.Tensor:
        """One batched step of the engine over its paged KV cache.

        Args:
            input_ids: (tokens,) int64, the new tokens of every sequence, packed.
            positions: (tokens,) int64, each token's position in its sequence.
            meta: the step's attention metadata (slot mapping, block tables, lengths).
            kv_caches: per layer, K and V of shape (num_blocks, block_size, kv_heads, head_dim).

        Returns:
            (tokens, hidden_size), after the final norm; pass rows to `compute_logits`.
        """
        with torch.inference_mode():
            rope = self.rope_table[positions]
            return self.hidden_states(input_ids, rope, PagedKVCache(kv_caches, meta))

    # -- the plain generate loop ------------------------------------------------------------

    def generate(
        self,
        ids: Sequence[int],
        max_new_tokens: int,
        temperature: float = 0.0,
        seed: int | None = None,
        *,
        stop_token_ids: Collection[int] | None = None,
        on_token: Callable[[int], object] | None = None,
    ) -> list[int]:
        """Continue one sequence, greedily or by sampling, with a contiguous KV cache.

        Args:
            ids: the prompt's token ids.
            max_new_tokens: most tokens to add.
            temperature: 0 is greedy; above 0 samples from `softmax(logits / temperature)`.
            seed: makes sampling reproducible.
            stop_token_ids: tokens that end the generation; the model's end-of-turn tokens
                when None, none at all when empty (benchmarks).
            on_token: called with each new token as soon as it is chosen (streaming).

        Returns:
            The new tokens only; the last is an end-of-turn token when the model stopped.

        Raises:
            ContextLengthExceededError: prompt plus `max_new_tokens` exceed the context.
        """
        input_ids = self._as_ids(ids)
        self._check_fits(len(input_ids), max_new_tokens)
        if max_new_tokens <= 0:
            return []
        config = self.config
        generator = None
        if temperature > 0 and seed is not None:
            generator = torch.Generator(device=self.device).manual_seed(seed)
        stop = set(config.eos_token_ids if stop_token_ids is None else stop_token_ids)
        cache = ContiguousKVCache(
            config.num_layers,
            config.num_kv_heads,
            config.head_dim,
            len(input_ids) + max_new_tokens,
            device=self.device,
            dtype=self.dtype,
        )
        new_tokens: list[int] = []
        try:
            with torch.inference_mode():
                hidden = self.hidden_states(input_ids, self.rope_table[: len(input_ids)], cache)
                while True:
                    logits = self.compute_logits(hidden[-1:])  # (1, vocab)
                    token = _pick(logits, temperature, generator)
                    new_tokens.append(token)
                    if on_token is not None:
                        on_token(token)
                    if token in stop or len(new_tokens) == max_new_tokens:
                        return new_tokens
                    cache.start += hidden.shape[0]
                    step = torch.tensor([token], device=self.device)
                    hidden = self.hidden_states(
                        step, self.rope_table[cache.start : cache.start + 1], cache
                    )
        finally:
            if self._fused is not None:  # its views of this call's cache go with the cache
                self._fused.release()

    # -- loading ----------------------------------------------------------------------------

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor | QuantizedTensor]]) -> None:
        """Fill the parameters from Hugging Face-named tensors, converting dtype and device.

        q/k/v and gate/up are copied into their fused matrices. A tensor that already has the
        parameter's dtype and device becomes the parameter as it is: with our loader that is
        a view of the file's memory map, so it costs neither a copy nor private memory.
        Quantized weights (`cortex.engine.quant`) take float or quantized tensors; a quantized
        tensor bound for a float parameter is dequantized.

        Raises:
            CortexError: a tensor is unknown, misshapen or missing.
        """
        slots = self._weight_slots()
        with torch.no_grad():
            for name, tensor in weights:
                slot = slots.pop(name, None)
                if slot is None:
                    if name.endswith("rotary_emb.inv_freq") or (
                        name == "lm_head.weight" and self.config.tie_word_embeddings
                    ):
                        continue
                    raise CortexError(f"checkpoint tensor {name!r} does not belong to this model")
                if tuple(tensor.shape) != tuple(slot.shape):
                    raise CortexError(
                        f"checkpoint tensor {name!r} has shape {tuple(tensor.shape)}, "
                        f"expected {tuple(slot.shape)}"
                    )
                if isinstance(slot, QuantRows | QuantizedWeight):
                    slot.copy_(tensor)
                elif isinstance(tensor, QuantizedTensor):
                    slot.copy_(tensor.dequantize())
                elif (
                    isinstance(slot, nn.Parameter)
                    and tensor.dtype == slot.dtype
                    and tensor.device == slot.device
                    and tensor.is_contiguous()
                ):
                    slot.data = tensor
                else:
                    slot.copy_(tensor)
        if slots:
            missing = ", ".join(sorted(slots)[:5])
            raise CortexError(f"checkpoint lacks {len(slots)} tensors, e.g. {missing}")

    def _weight_slots(self) -> dict[str, torch.Tensor | QuantRows]:
        """Each checkpoint name mapped to the view of our parameter it fills."""
        slots: dict[str, torch.Tensor | QuantRows] = {
            "model.embed_tokens.weight": self.embed_tokens,
            "model.norm.weight": self.norm.weight,
        }
        if not self.config.tie_word_embeddings:
            slots["lm_head.weight"] = self.lm_head
        for i, block in enumerate(self.layers):
            assert isinstance(block, TransformerBlock)
            slots |= block.weight_slots(f"model.layers.{i}.")
        return slots

    # -- helpers ----------------------------------------------------------------------------

    def _as_ids(self, ids: Sequence[int] | torch.Tensor) -> torch.Tensor:
        input_ids = torch.as_tensor(ids, dtype=torch.int64, device=self.device).reshape(-1)
        if input_ids.numel() == 0:
            raise InvalidRequestError("the prompt has no tokens", param="messages")
        return input_ids

    def _check_fits(self, prompt_tokens: int, max_new_tokens: int) -> None:
        context = self.config.context_length
        if prompt_tokens + max_new_tokens > context:
            raise ContextLengthExceededError(prompt_tokens, max_new_tokens, context)


def _pick(logits: torch.Tensor, temperature: float, generator: torch.Generator | None) -> int:
    """The next token from (1, vocab) float32 logits: argmax, or a draw at `temperature`."""
    if temperature <= 0:
        return int(logits.argmax(dim=-1).item())
    probs = torch.softmax(logits / temperature, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator).item())
