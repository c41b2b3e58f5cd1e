"""The lean decode path: matmuls as the device policy says; paged decode equals the reference."""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F

from cortex.engine.device import DtypePolicy
from cortex.engine.models.llama import linear


def test_linear_widens_prefill_blocks_and_keeps_decode_rows_in_the_weights_dtype() -> None:
    torch.manual_seed(0)
    weight = torch.randn(48, 32).to(torch.bfloat16)
    bias = torch.randn(48).to(torch.bfloat16)
    policy = DtypePolicy(torch.bfloat16, torch.float32, prefill_min_rows=8)
    block = torch.randn(8, 32).to(torch.bfloat16)
    wide = F.linear(block.float(), weight.float(), bias.float()).to(torch.bfloat16)
    out = linear(block, weight, bias, policy)
    assert out.dtype == torch.bfloat16 and torch.equal(out, wide)
    # Below the threshold the bfloat16 GEMM runs (its rounding differs from the wide one).
    few = block[:4]
    assert torch.equal(linear(few, weight, bias, policy), F.linear(few, weight, bias))
    # One row: `torch.mv` or `F.linear`, as the policy says; the same sums either way.
    row = block[:1]
    by_mv = linear(row, weight, bias, policy)
    by_linear = linear(row, weight, bias, replace(policy, row_kernel="linear"))
    assert torch.equal(by_linear, F.linear(row, weight, bias))
    torch.testing.assert_close(by_mv, by_linear, rtol=2e-2, atol=2e-2)
