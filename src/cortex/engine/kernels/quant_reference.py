"""The pure-torch reference of the weight-only int8/int4 matmul (`quant_matmul.py`'s twin).

It dequantizes the canonical layout of `cortex.engine.quant` and runs one matmul in float32:
the oracle of the Triton kernel's tests and the fallback on devices without it. The dequantizers
(and `unpack_int4`, the inverse of `cortex.engine.quant.pack_int4`) live here, below the
layout's module, so that module can call the kernels without an import cycle.
"""

from __future__ import annotations

import torch

__all__ = [
    "check_weight_only",
    "dequantize_int4",
    "dequantize_int8",
    "unpack_int4",
    "weight_only_matmul_reference",
]

_ACTIVATION_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def check_weight_only(
    x: torch.Tensor,
    qweight: torch.Tensor,
    scales: torch.Tensor,
    mins: torch.Tensor | None,
    group_size: int | None,
) -> None:
    """Check `weight_only_matmul` arguments; raises ValueError naming the first problem."""
    if x.dim() != 2 or x.dtype not in _ACTIVATION_DTYPES or x.stride(-1) != 1:
        raise ValueError(f"x must be (tokens, in) float with a contiguous last dim, {x.shape}")
    in_features = x.shape[1]
    out_features = qweight.shape[0]
    want: tuple[tuple[int, ...], torch.dtype, tuple[int, ...]]
    if mins is None:
        want = ((out_features, in_features), torch.int8, (out_features,))
    else:
        if group_size is None or in_features % group_size:
            raise ValueError(f"in_features {in_features} is not a multiple of {group_size}")
        want = (
            (out_features, in_features // 2),
            torch.uint8,
            (out_features, in_features // group_size),
        )
        if mins.shape != want[2] or mins.stride() != scales.stride():
            raise ValueError(f"mins must be {want[2]} like scales, got {tuple(mins.shape)}")
    if tuple(qweight.shape) != want[0] or qweight.dtype != want[1] or not qweight.is_contiguous():
        raise ValueError(f"qweight must be contiguous {want[1]} {want[0]}, got {qweight.shape}")
    if tuple(scales.shape) != want[2] or not scales.is_contiguous():
        raise ValueError(f"scales must be {want[2]}, got {tuple(scales.shape)}")
    for name, tensor in (("qweight", qweight), ("scales", scales), ("mins", mins)):
        if tensor is not None and tensor.device != x.device:
            raise ValueError(f"{name} is on {tensor.device}, x on {x.device}")


def weight_only_matmul_reference(
    x: torch.Tensor,
    qweight: torch.Tensor,
    scales: torch.Tensor,
    mins: torch.Tensor | None,
    group_size: int | None,
) -> torch.Tensor:
    """`x @ W.T` where W is int8 per channel (`mins` None) or int4 group-wise.

    Args:
        x: (tokens, in_features) float.
        qweight: int8 (out, in), or uint8 (out, in / 2) packed int4.
        scales: int8: (out,); int4: (out, in / group_size).
        mins: int4: (out, in / group_size); None for int8.
        group_size: int4's group size; None for int8.

    Returns:
        (tokens, out_features) in `x.dtype`, accumulated in float32.
    """
    if mins is None:
        weight = dequantize_int8(qweight, scales)
    else:
        assert group_size is not None
        weight = dequantize_int4(qweight, scales, mins, group_size)
    return (x.float() @ weight.T).to(x.dtype)


def dequantize_int8(qweight: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """`qweight * scales[:, None]` in float32."""
    return qweight.float() * scales.float()[:, None]


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """(out, in / 2) uint8 -> (out, in) uint8 values in [0, 15] (inverse of `pack_int4`)."""
    return torch.stack((packed & 0xF, packed >> 4), dim=-1).reshape(packed.shape[0], -1)


def dequantize_int4(
    qweight: torch.Tensor, scales: torch.Tensor, mins: torch.Tensor, group_size: int
) -> torch.Tensor:
    """`q * scales + mins` per group, in float32, shape (out, in)."""
    q = unpack_int4(qweight).float()
    out_features, in_features = q.shape
    grouped = q.reshape(out_features, in_features // group_size, group_size)
    w = grouped * scales.float()[..., None] + mins.float()[..., None]
    return w.reshape(out_features, in_features)
