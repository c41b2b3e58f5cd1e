"""Triton weight-only matmul: `x @ W.T` with W int8 per channel or int4 group-wise, on the fly.

The weight stays in the canonical layout of `cortex.engine.quant` in memory; each program
dequantizes one `(BLOCK_N, BLOCK_K)` tile at a time in registers and feeds `tl.dot` in the
activations' dtype (bfloat16/float16 tensor cores; float32 at IEEE precision), accumulating
in float32. Decode (a few rows) runs with a 16-row tile, the smallest `tl.dot` allows, and
wide `BLOCK_N`, so the launch streams the weight bytes once (the GEMV case); prefill tiles
rows by 64 (the GEMM case). int8's per-channel scale is applied once to the accumulator.
The torch twin is `quant_reference.weight_only_matmul_reference`.
"""

# Triton's @jit functions take untyped tensors/pointers; the Python launchers stay typed.
# mypy: disallow-untyped-defs=False, disallow-incomplete-defs=False

from __future__ import annotations

import torch
import triton
import triton.language as tl

from cortex.engine.kernels.quant_reference import check_weight_only
from cortex.engine.kernels.tuning import MIN_DOT, interpreting

__all__ = ["weight_only_matmul_triton"]


@triton.jit
def _weight_only_kernel(
    x_ptr,
    w_ptr,
    scale_ptr,
    min_ptr,
    out_ptr,
    M,
    N,
    K,
    stride_xm,
    stride_om,
    stride_wn,
    stride_sn,
    GROUP: tl.constexpr,
    INT4: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    UPCAST: tl.constexpr,
    PRECISION: tl.constexpr,
):
    rm = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    m_ok = rm < M
    n_ok = rn < N
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        rk = k0 + tl.arange(0, BLOCK_K)
        k_ok = rk < K
        x = tl.load(
            x_ptr + rm[:, None].to(tl.int64) * stride_xm + rk[None, :],
            mask=m_ok[:, None] & k_ok[None, :],
            other=0.0,
        )
        w_mask = n_ok[:, None] & k_ok[None, :]
        row = rn[:, None].to(tl.int64)
        if INT4:
            # Both nibbles of a byte are read by neighbouring lanes; the cache serves the repeat.
            packed = tl.load(w_ptr + row * stride_wn + (rk // 2)[None, :], mask=w_mask, other=0)
            q = ((packed >> ((rk % 2) * 4)[None, :]) & 0xF).to(tl.float32)
            group = (rk // GROUP)[None, :]
            scale = tl.load(scale_ptr + row * stride_sn + group, mask=w_mask, other=0.0)
            low = tl.load(min_ptr + row * stride_sn + group, mask=w_mask, other=0.0)
            w = q * scale.to(tl.float32) + low.to(tl.float32)  # (BLOCK_N, BLOCK_K)
        else:
            w = tl.load(w_ptr + row * stride_wn + rk[None, :], mask=w_mask, other=0)
            w = w.to(tl.float32)
        if UPCAST:  # the interpreter cannot compute in bf16 (it would multiply raw bits)
            x = x.to(tl.float32)
        else:
            w = w.to(x_ptr.dtype.element_ty)
        acc = tl.dot(x, tl.trans(w), acc, input_precision=PRECISION)
    if not INT4:
        scale = tl.load(scale_ptr + rn, mask=n_ok, other=0.0).to(tl.float32)
        acc = acc * scale[None, :]
    out = out_ptr + rm[:, None].to(tl.int64) * stride_om + rn[None, :]
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :])


def weight_only_matmul_triton(
    x: torch.Tensor,
    qweight: torch.Tensor,
    scales: torch.Tensor,
    mins: torch.Tensor | None,
    group_size: int | None,
) -> torch.Tensor:
    """Triton `weight_only_matmul`: same arguments and result as the torch reference."""
    check_weight_only(x, qweight, scales, mins, group_size)
    tokens, in_features = x.shape
    out_features = qweight.shape[0]
    out = torch.empty((tokens, out_features), dtype=x.dtype, device=x.device)
    if tokens == 0:
        return out
    if interpreting():  # small tiles: the interpreter pays per element
        block_m, block_n, block_k, warps = MIN_DOT, 16, 32, 1
    elif tokens <= MIN_DOT:
        block_m, block_n, block_k, warps = MIN_DOT, 64, 128, 4
    else:
        block_m, block_n, block_k, warps = 64, 64, 64, 4
    grid = (triton.cdiv(tokens, block_m), triton.cdiv(out_features, block_n))
    _weight_only_kernel[grid](
        x,
        qweight,
        scales,
        scales if mins is None else mins,
        out,
        tokens,
        out_features,
        in_features,
        x.stride(0),
        out.stride(0),
        qweight.stride(0),
        scales.stride(0),
        GROUP=group_size or 1,
        INT4=mins is not None,
        BLOCK_M=block_m,
        BLOCK_N=block_n,
        BLOCK_K=block_k,
        UPCAST=interpreting(),
        PRECISION="ieee" if x.dtype == torch.float32 else "tf32",
        num_warps=warps,
    )
    return out
