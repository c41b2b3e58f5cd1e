"""A decode step on CPU in one call: every block of a Llama-family model, fused in C++.

At one row per sequence the weight matmuls are a small part of a CPU decode step's Python and
dispatch cost: each block also runs two RMSNorms, the rotation, two K/V stores, attention, the
activation and two residual adds, some twenty torch calls of a few microseconds each. The
C++ next to this file (`cpu_decode.cpp`) runs the whole stack of blocks in one call: torch's
own kernels for the matmuls (the same ones the eager path calls, so quantized weights stay as
they are), plain loops for the rest, and the eager path's rounding at each step.

It is built on first use with the machine's C++ compiler against the installed torch (about
15 seconds, once: the library is kept in `kernel_cache_dir()`, keyed by the source, torch's
version, the compiler and the CPU) and loaded with `torch.ops.load_library`. Without a
compiler, or when the build fails, decode stays on the eager path and the reason is logged
once. `CORTEX_CPU_FUSED=0` turns it off (the eager path is what the fused one is tested
against).

What it covers: decode steps (one new token per sequence) of models whose blocks are Llama's
(`Attention` or Qwen3's, a SwiGLU `MLP`) with float, int8 or int4 weights, on CPU, with the
kernels on their torch path (`CORTEX_KERNELS` unset, `auto` or `torch`). Everything else runs
eagerly.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "DecodeLayout",
    "FusedDecoder",
    "build_library",
    "fused_decode_enabled",
    "kernel_cache_dir",
    "load_library",
]

logger = logging.getLogger(__name__)

_SOURCE = Path(__file__).with_name("cpu_decode.cpp")
_LIBRARY_NAME = "cortex_cpu"  # the TORCH_LIBRARY namespace in the C++

# Projection kinds, as `Kind` in the C++.
_LINEAR, _MV, _INT8, _INT4 = 0, 1, 2, 3
_QKV, _O, _GATE_UP, _DOWN = 0, 1, 2, 3


def fused_decode_enabled() -> bool:
    """Whether `CORTEX_CPU_FUSED` allows the fused step (anything but `0`, `off`, `false`)."""
    return os.environ.get("CORTEX_CPU_FUSED", "1").strip().lower() not in ("0", "off", "false")


def kernel_cache_dir() -> Path:
    """Where built kernels are kept: `$CORTEX_KERNEL_CACHE`, else the user's cache folder
    (`$XDG_CACHE_HOME/cortex/kernels`, `~/.cache/cortex/kernels`).

    Not under `$CORTEX_HOME` (the models' home): a process pointed at another models folder
    reuses the machine's build, as torch's own extensions do.
    """
    chosen = os.environ.get("CORTEX_KERNEL_CACHE")
    if chosen:
        return Path(chosen).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME")
    return (Path(cache) if cache else Path.home() / ".cache") / "cortex" / "kernels"


def _build_key(compiler: str) -> str:
    """What the built library depends on: the source, torch, the compiler and the CPU."""
    from cortex.engine.device import read_cpu_features

    cpu = read_cpu_features()
    digest = hashlib.sha256(_SOURCE.read_bytes())
    for part in (torch.__version__, compiler, sys.version, cpu.model_name, *sorted(cpu.flags)):
        digest.update(part.encode())
    return digest.hexdigest()[:16]


def _compile_command(compiler: str, source: Path, target: Path) -> list[str]:
    # torch's headers, as `torch.utils.cpp_extension.include_paths()` names them for CPU (that
    # module imports setuptools, which a plain venv may lack).
    root = Path(torch.__file__).parent
    includes = [root / "include", root / "include" / "torch" / "csrc" / "api" / "include"]
    torch_lib = root / "lib"
    abi = int(torch.compiled_with_cxx11_abi())
    return [
        compiler,
        "-O3",
        "-std=c++20",
        "-shared",
        "-fPIC",
        "-march=native",
        "-DNDEBUG",
        f"-D_GLIBCXX_USE_CXX11_ABI={abi}",
        *(f"-I{path}" for path in includes),
        str(source),
        "-o",
        str(target),
        f"-L{torch_lib}",
        f"-Wl,-rpath,{torch_lib}",
        "-lc10",
        "-ltorch_cpu",
    ]


def build_library(compiler: str | None = None) -> Path:
    """The compiled library's path, building it first if this machine has none yet.

    Args:
        compiler: the C++ compiler; None: `$CXX`, else `c++` or `g++` on the PATH.

    Raises:
        RuntimeError: no C++ compiler, or the build failed (with the compiler's last lines).
    """
    if compiler is None:
        compiler = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++") or ""
    if not compiler:
        raise RuntimeError("no C++ compiler (set CXX, or install g++)")
    folder = kernel_cache_dir() / f"cpu_decode-{_build_key(compiler)}"
    library = folder / "cpu_decode.so"
    if library.is_file():
        return library
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "build.lock", "w") as lock:  # one build per machine at a time
        fcntl.flock(lock, fcntl.LOCK_EX)
        if library.is_file():  # another process built it while we waited
            return library
        logger.info("building the fused CPU decode kernel (once, about 15 s)")
        with tempfile.NamedTemporaryFile(dir=folder, suffix=".so", delete=False) as tmp:
            partial = Path(tmp.name)
        try:
            try:
                done = subprocess.run(
                    _compile_command(compiler, _SOURCE, partial),
                    capture_output=True,
                    text=True,
                    check=False,
                )
            except OSError as error:  # not there, not executable
                raise RuntimeError(f"{compiler} failed: {error}") from error
            if done.returncode != 0:
                tail = "\n".join(done.stderr.strip().splitlines()[-8:])
                raise RuntimeError(f"{compiler} failed ({done.returncode}):\n{tail}")
            partial.replace(library)
        finally:
            partial.unlink(missing_ok=True)
    return library


@functools.cache
def load_library() -> str | None:
    """Build (once) and load the fused decode library; None when it loaded, else why not."""
    try:
        torch.ops.load_library(str(build_library()))  # type: ignore[no-untyped-call]
    except Exception as error:  # an optimisation: whatever stops it, decode stays eager
        logger.warning("fused CPU decode unavailable, decoding eagerly: %s", error)
        return str(error)
    return None


@dataclass(frozen=True)
class DecodeLayout:
    """Where a decode step's keys and values live, as the fused step reads them.

    Attributes:
        owner: the caches' owner; the step re-binds its views only when this object changes.
        views: builds per-layer (keys, values), each (rows, kv_heads, head_dim) views.
        store_rows: (n,) int64 cache row of each sequence's new key and value.
        key_start: (n,) int64 first row of each sequence's keys (with no block table).
        key_len: (n,) int64 each sequence's keys, the new one included.
        block_table: (n, blocks) int32/int64 or an empty tensor: key `t` of sequence `r` is
            at row `block_table[r, t // block_size] * block_size + t % block_size`.
        block_size: rows per block (0 without a block table).
    """

    owner: object
    views: Callable[[], tuple[list[torch.Tensor], list[torch.Tensor]]]
    store_rows: torch.Tensor
    key_start: torch.Tensor
    key_len: torch.Tensor
    block_table: torch.Tensor
    block_size: int


_EMPTY = torch.empty(0)


class FusedDecoder:
    """A model's blocks handed to the C++ step once, then run per decode step.

    The model describes itself layer by layer (`add_layer`, `project`, `set_final_norm`; see
    `Llama`'s `fused_decoder`), then `step` runs every block. Build with `create`, which says
    None when the library is not available.

    Attributes:
        steps: decode steps run fused so far.
    """

    QKV, O, GATE_UP, DOWN = _QKV, _O, _GATE_UP, _DOWN

    def __init__(self, stack: Any) -> None:
        self._stack = stack
        # One step at a time: the bound caches are the stack's state (two threads generating
        # with one model take turns, each step re-binding its own cache).
        self._lock = threading.Lock()
        self._owner: object = None
        self._max_float_rows: int | None = None
        self.steps = 0  # decode steps run fused so far

    @classmethod
    def create(
        cls, hidden: int, heads: int, kv_heads: int, head_dim: int, eps: float
    ) -> FusedDecoder | None:
        """An empty decoder for a model of these dimensions; None when the library is missing
        (no compiler, a failed build: `load_library` logged why)."""
        if load_library() is not None:
            return None
        stack = torch.classes.cortex_cpu.DecodeStack(hidden, heads, kv_heads, head_dim, eps)
        return cls(stack)

    def add_layer(
        self,
        input_norm: torch.Tensor,
        post_norm: torch.Tensor,
        qk_norms: tuple[torch.Tensor, torch.Tensor] | None,
        window: int | None,
    ) -> None:
        """The next block's norm gains, Qwen3's q/k norm gains (or None), its sliding window."""
        q_norm, k_norm = qk_norms if qk_norms is not None else (_EMPTY, _EMPTY)
        window_or_none = -1 if window is None else window
        self._stack.add_layer(input_norm, post_norm, q_norm, k_norm, window_or_none)

    def project(
        self,
        layer: int,
        which: int,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        *,
        quantized: tuple[int, torch.Tensor, int, int] | None = None,
        use_mv: bool = False,
    ) -> None:
        """Block `layer`'s projection `which` (`QKV`, `O`, `GATE_UP`, `DOWN`).

        Args:
            weight: the float matrix, or the CPU-packed quantized weight.
            bias: added after the product, or None.
            quantized: for a packed weight, (bits 8 or 4, its scales or int4's scale-and-zero
                table, int4's group size, the rows it has); None for a float matrix.
            use_mv: a float matrix multiplies a single row with `mv` rather than `linear`
                (as the model's `linear` would).
        """
        bias_t = _EMPTY if bias is None else bias
        if quantized is None:
            kind = _MV if use_mv else _LINEAR
            rows = weight.shape[0]
            self._stack.set_projection(layer, which, kind, weight, _EMPTY, bias_t, 0, rows)
            return
        bits, scales, group, rows = quantized
        kind = _INT8 if bits == 8 else _INT4
        self._stack.set_projection(layer, which, kind, weight, scales, bias_t, group, rows)

    def set_final_norm(self, gain: torch.Tensor) -> None:
        """The gain of the norm after the last block."""
        self._stack.set_final_norm(gain)

    def limit_float_rows(self, rows: int | None) -> None:
        """Steps of `rows` sequences or more run eagerly when the model has float matrices (the
        device policy widens such matmuls as prefill); None: no limit."""
        self._max_float_rows = rows

    def applies(self, rows: int) -> bool:
        """Whether a decode step of `rows` sequences runs fused (the switch and the policy)."""
        if not fused_decode_enabled():
            return False
        return self._max_float_rows is None or rows < self._max_float_rows

    def release(self) -> None:
        """Let go of the caches the last step read (they are freed with their owner)."""
        with self._lock:
            if self._owner is not None:
                self._stack.bind_caches([], [])
                self._owner = None

    def step(self, x: torch.Tensor, rope: torch.Tensor, layout: DecodeLayout) -> torch.Tensor:
        """Every block and the final norm for (n, hidden) embeddings of n new tokens.

        Args:
            x: (n, hidden) in the model's dtype.
            rope: (n, 2, head_dim // 2), the rotary table's rows at the tokens' positions.
            layout: where the keys are; the new tokens' keys and values are stored there.

        Returns:
            (n, hidden), normalised, as `Llama.hidden_states` returns it.
        """
        with self._lock:
            if layout.owner is not self._owner:
                keys, values = layout.views()
                self._stack.bind_caches(keys, values)
                self._owner = layout.owner
            self.steps += 1
            out: torch.Tensor = self._stack.step(
                x,
                rope,
                layout.store_rows,
                layout.key_start,
                layout.key_len,
                layout.block_table,
                layout.block_size,
            )
        return out
