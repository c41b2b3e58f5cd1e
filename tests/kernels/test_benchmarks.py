"""The kernel benchmark and the prepared GPU check run (their CPU parts) on this machine."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(torch.cuda.is_available(), reason="gpu_check.sh runs the GPU benchmark")
def test_kernel_benchmark_times_the_references_without_cuda() -> None:
    env = {**os.environ, "CORTEX_KERNELS": "auto"}
    result = subprocess.run(
        [sys.executable, "benchmarks/bench_kernels.py", "--quick", "--threads", "1"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    out = result.stdout
    assert "no CUDA: reference timings only" in out
    assert "peaks this run: copy" in out
    rows = [line for line in out.splitlines() if line.startswith("| ") and "µs" not in line]
    kernels = {row.split("|")[1].strip() for row in rows}
    assert kernels == {"store_kv", "prefill_attention", "decode_attention", "sample"}
    for row in rows:
        median_us = float(row.split("|")[3].replace(",", ""))
        assert median_us > 0
    assert "command: python benchmarks/bench_kernels.py --quick --threads 1" in out


def test_gpu_check_lists_its_steps_in_a_dry_run(tmp_path: Path) -> None:
    result = subprocess.run(
        ["bash", "benchmarks/gpu_check.sh", "--dry-run"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env={**os.environ, "OUT": str(tmp_path)},
    )
    steps = [line for line in result.stdout.splitlines() if line.startswith("== ")]
    assert [s.split()[1] for s in steps] == [
        "environment",
        "kernel-tests",
        "kernel-timings",
        "engine-e2e",
        "quant-decode",
    ]
    assert "CORTEX_KERNELS=triton TRITON_INTERPRET=0" in result.stdout
    assert "benchmarks/bench_engine.py --batched --device cuda" in result.stdout
    assert "benchmarks/bench_quant_decode.py --device cuda" in result.stdout
