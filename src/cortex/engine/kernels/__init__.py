"""Attention, KV-cache and sampling kernels: Triton on CUDA, pure-torch references on CPU.

`store_kv`, `prefill_attention`, `decode_attention`, `moe_experts` and `sample` dispatch per
call (see `cortex.engine.kernels.dispatch`); the references are exported under explicit names
for callers and tests that want one backend regardless of `CORTEX_KERNELS`.
"""

from __future__ import annotations

from cortex.engine.kernels.dispatch import (
    Backend,
    backend_for,
    decode_attention,
    moe_experts,
    prefill_attention,
    sample,
    store_kv,
    weight_only_matmul,
)
from cortex.engine.kernels.metadata import AttentionMetadata
from cortex.engine.kernels.moe_reference import moe_experts_reference
from cortex.engine.kernels.reference import (
    decode_attention_reference,
    prefill_attention_reference,
    sample_reference,
    store_kv_reference,
)

__all__ = [
    "AttentionMetadata",
    "Backend",
    "backend_for",
    "decode_attention",
    "decode_attention_reference",
    "moe_experts",
    "moe_experts_reference",
    "prefill_attention",
    "prefill_attention_reference",
    "sample",
    "sample_reference",
    "store_kv",
    "store_kv_reference",
    "weight_only_matmul",
]
