"""The fused mixture-of-experts kernel against its torch reference; the reference against a loop."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cortex.engine import kernels
from cortex.engine.kernels import moe_experts_reference

TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 2e-2}


def _inputs(
    tokens: int, experts: int, top_k: int, hidden: int, width: int, dtype: torch.dtype, seed: int
) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(tokens, hidden, generator=g).to(dtype)
    gate_up = (torch.randn(experts, 2 * width, hidden, generator=g) * 0.2).to(dtype)
    down = (torch.randn(experts, hidden, width, generator=g) * 0.2).to(dtype)
    # Routing skewed towards low ids, so some experts get many tokens and some none.
    scores = torch.randn(tokens, experts, generator=g) - torch.arange(experts) * 0.4
    weights, ids = torch.softmax(scores, -1).topk(top_k, dim=-1)
    return x, gate_up, down, ids, weights.to(dtype)


def _loop(x: torch.Tensor, gate_up: torch.Tensor, down: torch.Tensor, ids: torch.Tensor,
          weights: torch.Tensor) -> torch.Tensor:  # fmt: skip
    width = down.shape[2]
    out = torch.zeros_like(x, dtype=torch.float32)
    for t in range(x.shape[0]):
        for j in range(ids.shape[1]):
            e = int(ids[t, j])
            gate, up = (
                gate_up[e, :width].float() @ x[t].float(),
                gate_up[e, width:].float() @ x[t].float(),
            )
            out[t] += float(weights[t, j]) * (down[e].float() @ (F.silu(gate) * up))
    return out


@pytest.mark.parametrize(
    ("tokens", "experts", "top_k", "hidden", "width", "dtype"),
    [
        (1, 8, 2, 64, 32, torch.float32),  # decode: two tiles, every other tile empty
        (37, 8, 2, 64, 32, torch.float32),  # ragged groups, padded to 16
        (53, 6, 3, 48, 40, torch.float32),  # dims that are not multiples of the tiles
        (20, 16, 4, 64, 32, torch.bfloat16),
    ],
)
def test_triton_matches_reference(
    tokens: int, experts: int, top_k: int, hidden: int, width: int, dtype: torch.dtype,
    triton_kernels: None, device: torch.device,
) -> None:  # fmt: skip
    args = [t.to(device) for t in _inputs(tokens, experts, top_k, hidden, width, dtype, tokens)]
    out = kernels.moe_experts(*args)
    ref = moe_experts_reference(*[a.float() if a.is_floating_point() else a for a in args])
    assert out.dtype == dtype and out.shape == (tokens, hidden)
    tol = TOLERANCE[dtype]
    torch.testing.assert_close(out.float(), ref, rtol=tol, atol=tol * ref.abs().max().item())


def test_reference_matches_a_token_by_token_loop() -> None:
    x, gate_up, down, ids, weights = _inputs(9, 5, 2, 32, 24, torch.float32, 3)
    out = moe_experts_reference(x, gate_up, down, ids, weights)
    torch.testing.assert_close(out, _loop(x, gate_up, down, ids, weights), rtol=1e-5, atol=1e-5)
    one = moe_experts_reference(x[4:5], gate_up, down, ids[4:5], weights[4:5])  # the mv path
    torch.testing.assert_close(one, out[4:5], rtol=1e-5, atol=1e-5)


def test_align_pairs_groups_every_pair_once() -> None:
    from cortex.engine.kernels.moe import align_pairs

    _, _, _, ids, _ = _inputs(29, 7, 3, 8, 8, torch.float32, 5)
    pairs, tile_experts = align_pairs(ids, 7, 16)
    assert sorted(p for p in pairs.tolist() if p >= 0) == list(range(29 * 3))
    flat = ids.reshape(-1)
    for tile, expert in enumerate(tile_experts.tolist()):
        members = [p for p in pairs[tile * 16 : (tile + 1) * 16].tolist() if p >= 0]
        if expert == 7:
            assert not members  # past the last group
        else:
            assert members and all(int(flat[p]) == expert for p in members)


def test_checks_reject_mismatched_weights() -> None:
    x, gate_up, down, ids, weights = _inputs(4, 4, 2, 32, 16, torch.float32, 1)
    with pytest.raises(ValueError, match="down must be"):
        kernels.moe_experts(x, gate_up, down[:, :, :8].contiguous(), ids, weights)
    with pytest.raises(ValueError, match="dtype"):
        kernels.moe_experts(x, gate_up.bfloat16(), down, ids, weights)
