"""Backend choice per call from the device and CORTEX_KERNELS, and the argument checks."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from cortex.engine import kernels
from cortex.engine.kernels import AttentionMetadata


def _meta(seq_lens: list[int], q_lens: list[int], *, decode: bool = False) -> AttentionMetadata:
    cu = [0]
    for n in q_lens:
        cu.append(cu[-1] + n)
    return AttentionMetadata(
        is_decode=decode,
        slot_mapping=torch.arange(cu[-1], dtype=torch.int64),
        cu_seqlens_q=torch.tensor(cu, dtype=torch.int32),
        seq_lens=torch.tensor(seq_lens, dtype=torch.int32),
        block_tables=torch.zeros(len(seq_lens), 4, dtype=torch.int32),
        max_seqlen_q=max(q_lens),
        max_seqlen_k=max(seq_lens),
    )


def test_backend_follows_device_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.zeros(1)
    monkeypatch.delenv("CORTEX_KERNELS", raising=False)
    assert kernels.backend_for(cpu) == "torch"
    monkeypatch.setenv("CORTEX_KERNELS", "auto")
    assert kernels.backend_for(cpu) == "torch"
    monkeypatch.setenv("CORTEX_KERNELS", "torch")
    assert kernels.backend_for(cpu) == "torch"
    monkeypatch.setenv("CORTEX_KERNELS", "Triton")  # read at call time, case-insensitive
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert kernels.backend_for(cpu) == "triton"
    monkeypatch.setenv("CORTEX_KERNELS", "cuda")
    with pytest.raises(ValueError, match="CORTEX_KERNELS"):
        kernels.backend_for(cpu)


def test_forcing_triton_on_cpu_needs_the_interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORTEX_KERNELS", "triton")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    ints, floats = torch.zeros(2, dtype=torch.int64), torch.ones(2)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        kernels.sample(torch.zeros(2, 8), floats, ints, floats, floats, ints, ints)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CPU-only default")
def test_importing_the_package_on_cpu_does_not_import_triton() -> None:
    code = (
        "import sys, torch\n"
        "from cortex.engine import kernels\n"
        "kernels.sample(torch.randn(2, 9), torch.ones(2), torch.zeros(2, dtype=torch.int64),"
        " torch.ones(2), torch.zeros(2), torch.zeros(2, dtype=torch.int64),"
        " torch.zeros(2, dtype=torch.int64))\n"
        "print('triton' in sys.modules)\n"
    )
    env = {**os.environ, "CORTEX_KERNELS": "auto"}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert result.stdout.strip() == "False"


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_arguments_are_checked_before_running(
    backend: str, monkeypatch: pytest.MonkeyPatch, device: torch.device
) -> None:
    monkeypatch.setenv("CORTEX_KERNELS", backend)
    torch.set_default_device(device)
    try:
        _check_arguments()
    finally:
        torch.set_default_device(None)


def _check_arguments() -> None:
    cache = torch.zeros(4, 16, 2, 64)
    meta = _meta([5, 3], [5, 3])
    q = torch.zeros(8, 6, 64)
    with pytest.raises(ValueError, match="dtype"):
        kernels.prefill_attention(q.half(), cache, cache, meta)
    with pytest.raises(ValueError, match="not a multiple"):
        kernels.prefill_attention(torch.zeros(8, 5, 64), cache, cache, meta)
    with pytest.raises(ValueError, match="contiguous last dimension"):
        kernels.prefill_attention(torch.zeros(8, 64, 6).transpose(1, 2), cache, cache, meta)
    strided = cache.transpose(0, 1).contiguous().transpose(0, 1)
    with pytest.raises(ValueError, match="must be contiguous"):
        kernels.prefill_attention(q, strided, strided, meta)
    with pytest.raises(ValueError, match="rows for 2 sequences"):
        kernels.decode_attention(q, cache, cache, _meta([5, 3], [1, 1], decode=True))
    with pytest.raises(ValueError, match="block_tables"):
        bad = _meta([5, 3], [5, 3])
        bad.block_tables = torch.zeros(3, 4, dtype=torch.int32)
        kernels.prefill_attention(q, cache, cache, bad)
    key = torch.zeros(3, 2, 64)
    with pytest.raises(ValueError, match="slot_mapping"):
        kernels.store_kv(key, key, cache, cache, torch.zeros(4, dtype=torch.int64))
    with pytest.raises(ValueError, match="key must be"):
        kernels.store_kv(
            torch.zeros(3, 1, 64), key, cache, cache, torch.zeros(3, dtype=torch.int64)
        )
    ints = torch.zeros(2, dtype=torch.int64)
    with pytest.raises(ValueError, match="temperature must be floating"):
        kernels.sample(torch.zeros(2, 8), ints, ints, torch.ones(2), torch.zeros(2), ints, ints)
    with pytest.raises(ValueError, match=r"top_p must be \(2,\)"):
        kernels.sample(
            torch.zeros(2, 8), torch.ones(2), ints, torch.ones(3), torch.zeros(2), ints, ints
        )


def test_reference_attention_handles_empty_and_padding_sequences(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CORTEX_KERNELS", "torch")
    cache = torch.randn(4, 16, 1, 64)
    q = torch.randn(3, 2, 64)
    out = kernels.prefill_attention(q, cache, cache, _meta([4, 0, 2], [2, 0, 1]))
    assert out.shape == q.shape and not out.isnan().any()
    decode = kernels.decode_attention(q, cache, cache, _meta([4, 0, 2], [1, 1, 1], decode=True))
    assert decode[1].abs().max() == 0 and decode[0].abs().max() > 0
