"""What the device computes fast: CPU flags, a short speed probe, the dtype policy, memory release.

One dtype is not right for every CPU, nor for both phases of a request. Measured on two of the
project's machines (torch 2.13, 2 threads, SmolLM2-135M):

- an Intel Xeon with AMX: bfloat16 wins both phases (decode ~1.3x, prefill 2-3x float32);
- an AMD EPYC with AVX2 only: bfloat16 decodes 1.7x faster than float32 (half the bytes to
  stream per token) but prefills 6x slower (no native bfloat16 dot product, so torch's
  bfloat16 GEMM converts element by element).

So the policy has two dtypes. `dtype` is the weights', the KV cache's and the activations'
dtype: decode (a few rows per step) streams the weights and wants them small. `prefill_dtype`
is what a matmul of at least `prefill_min_rows` rows computes in: on a CPU without native
bfloat16 math it is float32, the bfloat16 weights being widened per call (one extra pass over
the weights per step, ~2% of a 512-token prefill's compute).

`choose_policy` decides from the CPU's flags (a table: AMX, AVX512-BF16, AVX2), and a
`SpeedProbe` (`probe_cpu_speed`, ~0.1-0.3 s) overrides the table where the machine measures
otherwise: flags say what an instruction set offers, not what torch's kernels make of it.
Both inputs are parameters, so the decision is testable on any machine.
"""

from __future__ import annotations

import ctypes
import functools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import torch
import torch.nn.functional as F

__all__ = [
    "CpuFeatures",
    "DtypePolicy",
    "SpeedProbe",
    "choose_policy",
    "cpu_speed",
    "default_dtype",
    "in_own_thread",
    "measured_policy",
    "probe_cpu_speed",
    "read_cpu_features",
    "release_host_memory",
]

# A matmul with at least this many rows is "prefill" (compute-bound); fewer rows are decode
# steps (weight-streaming-bound), where widening the weights would double the bytes.
PREFILL_MIN_ROWS = 32
# The probe must show the other dtype this much faster before it overrides the table
# (timings on a shared machine are noisy; the table is the safer default).
_PROBE_MARGIN = 1.15


@dataclass(frozen=True)
class CpuFeatures:
    """The CPU's model name and feature flags, as `/proc/cpuinfo` lists them.

    Attributes:
        model_name: e.g. `AMD EPYC 9B14`; empty when unknown.
        flags: lower-case flag names (`avx2`, `avx512_bf16`, `amx_bf16`...).
    """

    model_name: str
    flags: frozenset[str]

    @classmethod
    def from_cpuinfo(cls, text: str) -> CpuFeatures:
        """Parse the text of `/proc/cpuinfo` (the first processor's `model name` and `flags`)."""
        model_name, flags = "", ""
        for line in text.splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name" and not model_name:
                model_name = value.strip()
            elif key in ("flags", "Features") and not flags:  # x86, arm64
                flags = value
        return cls(model_name, frozenset(flags.lower().split()))

    @property
    def native_bf16(self) -> bool:
        """Whether the CPU multiplies bfloat16 natively (AMX tiles or AVX512-BF16 dot products)."""
        return "amx_bf16" in self.flags or "avx512_bf16" in self.flags

    @property
    def vector_isa(self) -> str:
        """The widest useful instruction set: `amx`, `avx512_bf16`, `avx512`, `avx2` or `none`."""
        if "amx_bf16" in self.flags:
            return "amx"
        if "avx512_bf16" in self.flags:
            return "avx512_bf16"
        if "avx512f" in self.flags:
            return "avx512"
        if "avx2" in self.flags:
            return "avx2"
        return "none"


def read_cpu_features(path: str | Path = "/proc/cpuinfo") -> CpuFeatures:
    """This machine's `CpuFeatures` (none known where `path` cannot be read)."""
    try:
        return CpuFeatures.from_cpuinfo(Path(path).read_text())
    except OSError:
        return CpuFeatures("", frozenset())


@dataclass(frozen=True)
class SpeedProbe:
    """Milliseconds of decode- and prefill-shaped matmuls in each dtype (best of interleaved runs).

    Attributes:
        decode_ms: `{(dtype name, kernel): ms}` of one row through a stack of weight matrices,
            for kernels `mv` (`torch.mv`) and `linear` (`F.linear` on a 1-row matrix); which
            is faster differs by CPU and dtype (bfloat16 `mv` is several times slower than
            `linear` on one AMD EPYC, 1.5x faster on an Intel Xeon).
        prefill_ms: `{dtype name: ms}` of a block of rows through one weight matrix.
    """

    decode_ms: dict[tuple[str, str], float]
    prefill_ms: dict[str, float]

    def decode_best(self, dtype: str) -> tuple[float, str]:
        """The fastest single-row time for `dtype` and the kernel that made it."""
        return min((ms, kernel) for (name, kernel), ms in self.decode_ms.items() if name == dtype)


def probe_cpu_speed(
    *, hidden: int = 576, width: int = 1536, layers: int = 8, rows: int = 128, repeats: int = 5
) -> SpeedProbe:
    """Time decode and prefill matmuls in float32 and bfloat16 on this CPU (~0.2-0.5 s).

    The shapes default to SmolLM2-135M's MLP: what matters is the ratio between dtypes and
    kernels, which the CPU and torch's kernels (not the model size) decide. Cases alternate
    round by round and each keeps its best, so a burst of load from other processes hits all
    alike. The bfloat16 prefill times torch's bfloat16 GEMM itself, the path a CPU without
    native bfloat16 makes slow.
    """
    generator = torch.Generator().manual_seed(0)
    cases: dict[tuple[str, str], Callable[[], object]] = {}
    for dtype in (torch.float32, torch.bfloat16):
        name = _name(dtype)
        weights = [torch.randn(width, hidden, generator=generator).to(dtype) for _ in range(layers)]
        row = torch.randn(1, hidden, generator=generator).to(dtype)
        block = torch.randn(rows, hidden, generator=generator).to(dtype)
        cases[(name, "mv")] = functools.partial(_rows_mv, weights, row)
        cases[(name, "linear")] = functools.partial(_rows_linear, weights, row)
        cases[(name, "prefill")] = functools.partial(F.linear, block, weights[0])
    best = dict.fromkeys(cases, float("inf"))
    with torch.inference_mode():
        for run in cases.values():  # warm-up: first calls pick kernels and touch memory
            run()
        for _ in range(repeats):
            for key, run in cases.items():
                start = time.perf_counter()
                run()
                best[key] = min(best[key], (time.perf_counter() - start) * 1e3)
    return SpeedProbe(
        decode_ms={key: ms for key, ms in best.items() if key[1] != "prefill"},
        prefill_ms={name: ms for (name, kernel), ms in best.items() if kernel == "prefill"},
    )


def _rows_mv(weights: list[torch.Tensor], row: torch.Tensor) -> list[torch.Tensor]:
    return [torch.mv(w, row[0]) for w in weights]


def _rows_linear(weights: list[torch.Tensor], row: torch.Tensor) -> list[torch.Tensor]:
    return [F.linear(row, w) for w in weights]


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


@dataclass(frozen=True)
class DtypePolicy:
    """How a model runs on a device: its dtype, how its matmuls run, its quantization.

    Attributes:
        dtype: weights, KV cache and activations (decode streams the weights in this dtype).
        prefill_dtype: matmuls of `prefill_min_rows` rows or more compute in this dtype (the
            weights widened per call when it differs from `dtype`).
        prefill_min_rows: the row count from which a matmul counts as prefill.
        row_kernel: how a single CPU row is multiplied: `mv` (`torch.mv`) or `linear`
            (`F.linear`), whichever streams this CPU's weights faster.
        quant: the weight quantization to load with when none is configured (`none` keeps
            the weights in `dtype`).
        reason: one line saying why, for logs.
    """

    dtype: torch.dtype
    prefill_dtype: torch.dtype
    prefill_min_rows: int = PREFILL_MIN_ROWS
    row_kernel: Literal["mv", "linear"] = "mv"
    quant: str = "none"
    reason: str = ""

    @property
    def dtype_name(self) -> str:
        """`dtype` as a name (`bfloat16`, `float32`...)."""
        return _name(self.dtype)

    @property
    def prefill_dtype_name(self) -> str:
        """`prefill_dtype` as a name."""
        return _name(self.prefill_dtype)


def choose_policy(
    device: str | torch.device = "cpu",
    *,
    features: CpuFeatures | None = None,
    probe: SpeedProbe | None = None,
    dtype: torch.dtype | None = None,
) -> DtypePolicy:
    """The dtype policy for `device`: a table keyed by CPU flags, corrected by a probe if given.

    CUDA: bfloat16 throughout. CPU, by flags:

    | CPU flags | dtype | prefill matmuls |
    |---|---|---|
    | `amx_bf16` or `avx512_bf16` | bfloat16 | bfloat16 |
    | `avx2` (or `avx512f`) without native bfloat16 | bfloat16 | float32 |
    | neither | float32 | float32 |

    A probe then overrides either column where it measures the other dtype at least 15%
    faster (`dtype` by the best single-row timings, `prefill_dtype` by the prefill ones) and
    picks the single-row kernel; without one, rows go through `torch.mv`.

    Args:
        device: `cpu`, `cuda`, `cuda:N` or a `torch.device`.
        features: the CPU's flags; read from `/proc/cpuinfo` when None.
        probe: measured matmul timings (`probe_cpu_speed()`); the table alone when None.
        dtype: force the weights' dtype (e.g. float32 for exactness); the rest still follows
            the flags and the probe (prefill dtype, the single-row kernel for this dtype).
    """
    if torch.device(device).type == "cuda":
        chosen = torch.bfloat16 if dtype is None else dtype
        return DtypePolicy(chosen, chosen, reason="CUDA: bfloat16")
    features = read_cpu_features() if features is None else features
    isa = features.vector_isa
    if features.native_bf16:
        weights, prefill = torch.bfloat16, torch.bfloat16
        why = f"{isa}: native bfloat16 matmuls"
    elif isa in ("avx2", "avx512"):
        weights, prefill = torch.bfloat16, torch.float32
        why = f"{isa} without native bfloat16: bfloat16 weights for decode, float32 prefill"
    else:
        weights, prefill = torch.float32, torch.float32
        why = "no AVX2: float32"
    if probe is not None:
        f32_ms, bf16_ms = probe.decode_best("float32")[0], probe.decode_best("bfloat16")[0]
        weights = _faster(weights, f32_ms, bf16_ms)
        prefill = _faster(prefill, probe.prefill_ms["float32"], probe.prefill_ms["bfloat16"])
    if dtype is not None:
        weights, why = dtype, f"{why}; dtype {_name(dtype)} asked for"
        if dtype not in (torch.float32, torch.bfloat16):
            prefill = dtype  # float16: no widening (slow on CPU either way)
    if probe is None or _name(weights) not in ("float32", "bfloat16"):
        return DtypePolicy(weights, prefill, reason=why)
    kernel: Literal["mv", "linear"] = (
        "linear" if probe.decode_best(_name(weights))[1] == "linear" else "mv"
    )
    why += (
        f"; probe: decode {f32_ms:.2f} ms float32 vs {bf16_ms:.2f} ms bfloat16, prefill "
        f"{probe.prefill_ms['float32']:.2f} vs {probe.prefill_ms['bfloat16']:.2f} ms, "
        f"rows by {kernel}"
    )
    return DtypePolicy(weights, prefill, row_kernel=kernel, reason=why)


def _faster(chosen: torch.dtype, float32_ms: float, bfloat16_ms: float) -> torch.dtype:
    """`chosen`, unless the other dtype measured clearly faster."""
    if chosen == torch.bfloat16 and float32_ms * _PROBE_MARGIN < bfloat16_ms:
        return torch.float32
    if chosen == torch.float32 and bfloat16_ms * _PROBE_MARGIN < float32_ms:
        return torch.bfloat16
    return chosen


def default_dtype(device: torch.device, features: CpuFeatures | None = None) -> torch.dtype:
    """The weights' dtype `choose_policy` picks for `device` from the CPU flags alone."""
    return choose_policy(device, features=features).dtype


@functools.cache
def cpu_speed() -> SpeedProbe:
    """This machine's `probe_cpu_speed()`, measured once per process (the CPU does not change)."""
    return in_own_thread(probe_cpu_speed)


_T = TypeVar("_T")


def in_own_thread(work: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
    """Run `work(*args, **kwargs)` on a new thread that ends with it; its result or exception.

    For one-off CPU torch work (a load, a probe, an embedding batch) off the engine's worker
    thread. torch's CPU kernels run their parallel regions on OpenMP, and GNU OpenMP keeps a
    pool of worker threads for every thread that ever opened a region, until that thread ends.
    Once the pools together hold more threads than there are CPUs, its idle workers stop
    spinning between regions and sleep instead, and every small kernel of a decode step then
    waits for a wake-up: measured on a 2-core machine, an int4 SmolLM2 step run on a worker
    thread fell from 60-68 to 31-38 tok/s once the main thread had run one matmul
    (`benchmarks/bench_engine.py --quants int4 --engine`). A thread that ends takes its pool
    with it, so loads and probes leave the decoding thread's pool the only one.
    """
    result: list[_T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            result.append(work(*args, **kwargs))
        except BaseException as exc:  # handed to the caller below
            failure.append(exc)

    thread = threading.Thread(target=run, name=f"cortex-{getattr(work, '__name__', 'work')}")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return result[0]


def measured_policy(
    device: str | torch.device = "cpu", dtype: torch.dtype | None = None
) -> DtypePolicy:
    """`choose_policy` for this machine: its CPU flags and its (cached) speed probe."""
    if torch.device(device).type == "cuda":
        return choose_policy(device, dtype=dtype)
    return choose_policy(device, probe=cpu_speed(), dtype=dtype)


def release_host_memory() -> None:
    """Hand freed heap memory back to the OS (glibc keeps it otherwise).

    glibc raises its mmap threshold after large frees, so later tensors of a few MB come from
    the heap, and freeing them does not shrink the process until `malloc_trim`.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: nothing to do
        return
    libc.malloc_trim(0)
