"""The Triton weight-only int8/int4 matmul against its torch reference (interpreted on CPU)."""

from __future__ import annotations

import pytest
import torch

from cortex.engine import kernels
from cortex.engine.kernels.quant_reference import weight_only_matmul_reference
from cortex.engine.quant import QuantizedTensor, QuantSpec


@pytest.mark.parametrize(
    ("tokens", "out_features", "in_features", "spec", "dtype"),
    [
        (1, 48, 64, QuantSpec(8), torch.float32),  # decode: the GEMV case
        (3, 40, 96, QuantSpec(4, 32), torch.float32),  # ragged N against the 16-wide tile
        (1, 32, 128, QuantSpec(4, 64), torch.bfloat16),
        (20, 32, 256, QuantSpec(4, 128), torch.float16),  # prefill: more than one row tile
        (17, 24, 64, QuantSpec(8), torch.bfloat16),
    ],
    ids=str,
)
def test_weight_only_matmul_matches_reference(
    tokens: int,
    out_features: int,
    in_features: int,
    spec: QuantSpec,
    dtype: torch.dtype,
    triton_kernels: None,
    device: torch.device,
) -> None:
    gen = torch.Generator().manual_seed(tokens + out_features)
    weight = torch.randn(out_features, in_features, generator=gen) * 0.1
    pieces = [p.to(device) for p in QuantizedTensor.quantize(weight, spec).pieces]
    qweight, scales = pieces[0], pieces[1]
    mins = pieces[2] if spec.bits == 4 else None
    # Rows of a wider activation buffer: a strided x must work.
    wide = torch.randn(tokens, in_features + 8, generator=gen).to(dtype).to(device)
    x = wide[:, :in_features]
    out = kernels.weight_only_matmul(x, qweight, scales, mins, spec.group_size)
    expected = weight_only_matmul_reference(x, qweight, scales, mins, spec.group_size)
    assert out.dtype == dtype and out.shape == (tokens, out_features)
    # float32 sums in another order; 16-bit outputs round once more.
    tolerance = 1e-4 if dtype == torch.float32 else 1e-2
    scale = expected.float().abs().max().item()
    assert (out.float() - expected.float()).abs().max().item() <= tolerance * max(scale, 1.0)


def test_weight_only_matmul_rejects_a_misshapen_weight(triton_kernels: None) -> None:
    x = torch.randn(2, 64)
    q, scales, mins = QuantizedTensor.quantize(torch.randn(32, 64), QuantSpec(4, 32)).pieces
    with pytest.raises(ValueError, match="not a multiple"):
        kernels.weight_only_matmul(x, q, scales, mins, 48)
    with pytest.raises(ValueError, match="qweight must be"):
        kernels.weight_only_matmul(x[:, :32], q, scales[:, :1], mins[:, :1], 32)
