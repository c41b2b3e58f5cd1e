"""The device policy: CPU flags -> dtypes, a probe's corrections, and the matmuls it selects."""

from __future__ import annotations

import pytest
import torch

from cortex.engine.device import (
    CpuFeatures,
    SpeedProbe,
    choose_policy,
    default_dtype,
    in_own_thread,
    probe_cpu_speed,
    read_cpu_features,
    release_host_memory,
)

CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse2 avx f16c fma avx2 bmi2
processor\t: 1
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse2 avx f16c fma avx2 bmi2
"""

AMX = CpuFeatures("Intel Xeon", frozenset({"avx2", "avx512f", "avx512_bf16", "amx_bf16"}))
AVX512_BF16 = CpuFeatures("AMD EPYC 9B14", frozenset({"avx2", "avx512f", "avx512_bf16"}))
AVX2 = CpuFeatures.from_cpuinfo(CPUINFO)
OLD = CpuFeatures("old", frozenset({"sse2"}))


def probe(
    *,
    f32_mv: float,
    f32_linear: float,
    bf16_mv: float,
    bf16_linear: float,
    prefill: tuple[float, float],
) -> SpeedProbe:
    return SpeedProbe(
        decode_ms={
            ("float32", "mv"): f32_mv,
            ("float32", "linear"): f32_linear,
            ("bfloat16", "mv"): bf16_mv,
            ("bfloat16", "linear"): bf16_linear,
        },
        prefill_ms={"float32": prefill[0], "bfloat16": prefill[1]},
    )


def test_cpuinfo_gives_the_first_model_name_and_its_flags() -> None:
    assert AVX2.model_name == "AMD EPYC 7B13"
    assert AVX2.flags == {"fpu", "sse2", "avx", "f16c", "fma", "avx2", "bmi2"}
    assert AVX2.vector_isa == "avx2" and not AVX2.native_bf16
    assert AMX.vector_isa == "amx" and AMX.native_bf16
    assert AVX512_BF16.vector_isa == "avx512_bf16" and AVX512_BF16.native_bf16


def test_an_unreadable_cpuinfo_means_no_known_features() -> None:
    features = read_cpu_features("/nonexistent/cpuinfo")
    assert features == CpuFeatures("", frozenset())
    assert choose_policy("cpu", features=features).dtype == torch.float32


@pytest.mark.parametrize(
    ("features", "dtype", "prefill"),
    [
        (AMX, torch.bfloat16, torch.bfloat16),
        (AVX512_BF16, torch.bfloat16, torch.bfloat16),
        # AVX2: bfloat16 halves the bytes decode streams, but its GEMM is slow: float32 prefill.
        (AVX2, torch.bfloat16, torch.float32),
        (OLD, torch.float32, torch.float32),
    ],
)
def test_the_flags_table(features: CpuFeatures, dtype: torch.dtype, prefill: torch.dtype) -> None:
    policy = choose_policy("cpu", features=features)
    assert (policy.dtype, policy.prefill_dtype) == (dtype, prefill)
    assert policy.row_kernel == "mv" and policy.quant == "none"
    assert default_dtype(torch.device("cpu"), AVX2) == torch.bfloat16


def test_cuda_is_bfloat16_whatever_the_cpu() -> None:
    policy = choose_policy("cuda:0", features=OLD)
    assert (policy.dtype, policy.prefill_dtype) == (torch.bfloat16, torch.bfloat16)


def test_a_probe_overrides_the_table_only_by_a_clear_margin() -> None:
    # bfloat16 single rows measured 3x slower than float32's (both kernels): float32 wins.
    slow_bf16 = probe(f32_mv=2, f32_linear=3, bf16_mv=9, bf16_linear=6, prefill=(8, 1))
    policy = choose_policy("cpu", features=AMX, probe=slow_bf16)
    assert policy.dtype == torch.float32 and policy.prefill_dtype == torch.bfloat16
    assert policy.row_kernel == "mv"  # float32's faster kernel
    # Within 15%: the table stands.
    close = probe(f32_mv=2, f32_linear=3, bf16_mv=2.2, bf16_linear=3, prefill=(1, 1.1))
    policy = choose_policy("cpu", features=AVX2, probe=close)
    assert (policy.dtype, policy.prefill_dtype) == (torch.bfloat16, torch.float32)
    # A bfloat16 GEMM measured fast on an AVX2 table entry: bfloat16 prefill after all.
    fast_gemm = probe(f32_mv=4, f32_linear=4, bf16_mv=2, bf16_linear=2, prefill=(8, 2))
    assert choose_policy("cpu", features=AVX2, probe=fast_gemm).prefill_dtype == torch.bfloat16


def test_the_probe_picks_the_faster_single_row_kernel_for_the_chosen_dtype() -> None:
    # One AMD EPYC: bfloat16 `torch.mv` is ten times slower than `F.linear` on one row.
    epyc = probe(f32_mv=2.7, f32_linear=6.8, bf16_mv=12.5, bf16_linear=1.2, prefill=(8, 0.7))
    policy = choose_policy("cpu", features=AVX512_BF16, probe=epyc)
    assert (policy.dtype, policy.row_kernel) == (torch.bfloat16, "linear")
    forced = choose_policy("cpu", features=AVX512_BF16, probe=epyc, dtype=torch.float32)
    assert (forced.dtype, forced.row_kernel) == (torch.float32, "mv")
    assert "asked for" in forced.reason


def test_the_probe_measures_every_case() -> None:
    measured = probe_cpu_speed(hidden=64, width=128, layers=2, rows=32, repeats=1)
    assert set(measured.decode_ms) == {
        ("float32", "mv"),
        ("float32", "linear"),
        ("bfloat16", "mv"),
        ("bfloat16", "linear"),
    }
    assert set(measured.prefill_ms) == {"float32", "bfloat16"}
    assert all(ms > 0 for ms in [*measured.decode_ms.values(), *measured.prefill_ms.values()])
    assert measured.decode_best("float32")[1] in ("mv", "linear")


def test_release_host_memory_runs() -> None:
    release_host_memory()  # glibc's malloc_trim, or nothing elsewhere


def test_in_own_thread_runs_on_a_thread_that_ends_and_hands_back_the_result() -> None:
    import threading

    seen: list[threading.Thread] = []

    def work(a: int, *, b: int) -> int:
        seen.append(threading.current_thread())
        return a + b

    assert in_own_thread(work, 2, b=3) == 5
    assert seen[0] is not threading.current_thread()
    assert not seen[0].is_alive()  # ended with the work: its OpenMP pool went with it


def test_in_own_thread_raises_the_works_exception_in_the_caller() -> None:
    def work() -> None:
        raise ValueError("bad shape")

    with pytest.raises(ValueError, match="bad shape"):
        in_own_thread(work)
