"""Kernel-test fixtures: run the real Triton kernels (interpreted on CPU) through the dispatch."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def triton_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    """Force `CORTEX_KERNELS=triton` for one test (the interpreter on a CPU machine)."""
    monkeypatch.setenv("CORTEX_KERNELS", "triton")


@pytest.fixture
def device() -> torch.device:
    """CUDA when present (the compiled kernels), else CPU (the interpreter)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
