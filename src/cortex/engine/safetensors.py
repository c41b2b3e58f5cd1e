"""Our safetensors reader and writer: checked headers, zero-copy mmaps, sharded checkpoints."""

from __future__ import annotations

import json
import mmap
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final

import torch

from cortex.errors import CortexError

__all__ = [
    "MAX_HEADER_BYTES",
    "SafetensorsError",
    "SafetensorsFile",
    "TensorInfo",
    "load_checkpoint",
    "load_file",
    "safe_open",
    "save_file",
    "write_tensors",
]

MAX_HEADER_BYTES: Final = 100_000_000
"""The official reader's `MAX_HEADER_SIZE`: a longer header is refused before it is read."""

_U64_LIMIT: Final = 1 << 64
_METADATA_KEY: Final = "__metadata__"
SINGLE_FILE: Final = "model.safetensors"
INDEX_FILE: Final = "model.safetensors.index.json"


class SafetensorsError(CortexError):
    """A safetensors file (or sharded checkpoint) is malformed, missing, or cannot be written.

    Args:
        path: the file or folder at fault.
        fault: what is wrong with it.
    """

    def __init__(self, path: str | os.PathLike[str], fault: str) -> None:
        super().__init__(f"{os.fspath(path)}: {fault}")
        self.path = os.fspath(path)
        self.fault = fault


@dataclass(frozen=True)
class _Dtype:
    name: str
    bits: int
    torch_name: str | None  # attribute of `torch`, when torch has the type


# In the order of the official `Dtype` enum: its writer sorts tensors by this, descending.
_DTYPE_LIST: Final = (
    _Dtype("BOOL", 8, "bool"),
    _Dtype("F4", 4, None),
    _Dtype("F6_E2M3", 6, None),
    _Dtype("F6_E3M2", 6, None),
    _Dtype("U8", 8, "uint8"),
    _Dtype("I8", 8, "int8"),
    _Dtype("F8_E5M2", 8, "float8_e5m2"),
    _Dtype("F8_E4M3", 8, "float8_e4m3fn"),
    _Dtype("F8_E8M0", 8, "float8_e8m0fnu"),
    _Dtype("F8_E4M3FNUZ", 8, "float8_e4m3fnuz"),
    _Dtype("F8_E5M2FNUZ", 8, "float8_e5m2fnuz"),
    _Dtype("I16", 16, "int16"),
    _Dtype("U16", 16, "uint16"),
    _Dtype("F16", 16, "float16"),
    _Dtype("BF16", 16, "bfloat16"),
    _Dtype("I32", 32, "int32"),
    _Dtype("U32", 32, "uint32"),
    _Dtype("F32", 32, "float32"),
    _Dtype("C64", 64, "complex64"),
    _Dtype("F64", 64, "float64"),
    _Dtype("I64", 64, "int64"),
    _Dtype("U64", 64, "uint64"),
)
_DTYPES: Final = {d.name: d for d in _DTYPE_LIST}
_RANK: Final = {d.name: rank for rank, d in enumerate(_DTYPE_LIST)}


def _torch_dtype(name: str) -> torch.dtype | None:
    attr = _DTYPES[name].torch_name
    dtype = getattr(torch, attr, None) if attr is not None else None
    return dtype if isinstance(dtype, torch.dtype) else None


def _dtype_name(dtype: torch.dtype) -> str | None:
    for d in _DTYPE_LIST:
        if d.torch_name is not None and getattr(torch, d.torch_name, None) == dtype:
            return d.name
    return None


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lies in a safetensors file.

    Attributes:
        name: the tensor's key in the header.
        dtype: the safetensors dtype name, e.g. `"BF16"`.
        shape: the tensor's shape (`()` for a scalar).
        data_offsets: `(begin, end)` in bytes, relative to the start of the data section.
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    data_offsets: tuple[int, int]

    @property
    def torch_dtype(self) -> torch.dtype | None:
        """The matching torch dtype, or None when torch has no such type (F4, F6...)."""
        return _torch_dtype(self.dtype)

    @property
    def nbytes(self) -> int:
        """Bytes the tensor occupies in the file."""
        return self.data_offsets[1] - self.data_offsets[0]


class _DuplicateKeyError(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKeyError(f"duplicate key {key!r} in the header")
        result[key] = value
    return result


def _is_u64(value: object) -> bool:
    return type(value) is int and 0 <= value < _U64_LIMIT


def _utf8_ok(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates from \ud800-style escapes
        return False
    return True


def _parse_entry(path: Path, name: str, entry: object) -> TensorInfo:
    if not _utf8_ok(name):
        raise SafetensorsError(path, f"tensor name {name!r} is not valid UTF-8")
    if not isinstance(entry, dict):
        raise SafetensorsError(path, f"tensor {name!r}: header entry is not an object")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in _DTYPES:
        raise SafetensorsError(path, f"tensor {name!r}: unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not all(_is_u64(d) for d in shape):
        raise SafetensorsError(path, f"tensor {name!r}: shape {shape!r} is not a list of sizes")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(map(_is_u64, offsets)):
        raise SafetensorsError(
            path, f"tensor {name!r}: data_offsets {offsets!r} is not a [begin, end] pair"
        )
    return TensorInfo(name, dtype, tuple(shape), (offsets[0], offsets[1]))


def _parse_header(path: Path, raw: bytes) -> tuple[list[TensorInfo], dict[str, str]]:
    """Decode and type-check the JSON header (the official reader's checks 4 and 5)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SafetensorsError(path, f"header is not valid UTF-8 ({exc.reason})") from None
    try:
        header = json.loads(text, object_pairs_hook=_no_duplicates)
    except _DuplicateKeyError as exc:
        raise SafetensorsError(path, str(exc)) from None
    except (ValueError, RecursionError) as exc:
        raise SafetensorsError(path, f"header is not valid JSON ({exc})") from None
    if not isinstance(header, dict):
        raise SafetensorsError(path, "header is not a JSON object")
    metadata = header.pop(_METADATA_KEY, None)
    if metadata is None:  # serde reads `null` as no metadata
        metadata = {}
    if not isinstance(metadata, dict) or not all(
        isinstance(v, str) and _utf8_ok(k) and _utf8_ok(v) for k, v in metadata.items()
    ):
        raise SafetensorsError(path, "__metadata__ must map strings to strings")
    infos = [_parse_entry(path, name, entry) for name, entry in header.items()]
    return infos, metadata


def _validate_layout(path: Path, infos: list[TensorInfo], data_bytes: int) -> list[TensorInfo]:
    """The official `Metadata::validate`: spans tile the data section exactly, in offset order."""
    infos = sorted(infos, key=lambda info: info.data_offsets)
    expected_begin = 0
    for info in infos:
        begin, end = info.data_offsets
        if begin != expected_begin or end < begin:
            fault = "overlaps the previous tensor" if begin < expected_begin else "leaves a gap"
            if end < begin:
                fault = "ends before it begins"
            raise SafetensorsError(
                path, f"tensor {info.name!r}: invalid data_offsets [{begin}, {end}] ({fault})"
            )
        numel = 1
        for dim in info.shape:
            numel *= dim
            if numel >= _U64_LIMIT:
                raise SafetensorsError(path, f"tensor {info.name!r}: shape {info.shape} overflows")
        nbits = numel * _DTYPES[info.dtype].bits
        if nbits >= _U64_LIMIT:
            raise SafetensorsError(path, f"tensor {info.name!r}: shape {info.shape} overflows")
        if nbits % 8:
            raise SafetensorsError(path, f"tensor {info.name!r}: does not end on a byte boundary")
        if end - begin != nbits // 8:
            raise SafetensorsError(
                path,
                f"tensor {info.name!r}: {info.dtype} {list(info.shape)} needs {nbits // 8} bytes "
                f"but data_offsets span {end - begin}",
            )
        expected_begin = end
    if expected_begin != data_bytes:
        raise SafetensorsError(
            path,
            f"the header covers {expected_begin} bytes of data but the file holds {data_bytes}",
        )
    return infos


class SafetensorsFile:
    """An open, validated safetensors file whose tensors are views of a memory map.

    Nothing but the header is read when the file is opened; a tensor's pages are read from
    disk only when the tensor is used. Use as a context manager, or call `close()`.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._map: mmap.mmap | None = None
        try:
            with open(self.path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                prefix = f.read(8)
                if len(prefix) < 8:
                    raise SafetensorsError(
                        self.path, f"file is {size} bytes, too short for a header"
                    )
                header_len = int.from_bytes(prefix, "little")
                if header_len > MAX_HEADER_BYTES:
                    raise SafetensorsError(
                        self.path, f"header length {header_len} is over {MAX_HEADER_BYTES} bytes"
                    )
                if 8 + header_len > size:
                    raise SafetensorsError(
                        self.path, f"header length {header_len} runs past the end of the file"
                    )
                raw = f.read(header_len)
                infos, self._metadata = _parse_header(self.path, raw)
                self._data_start = 8 + header_len
                ordered = _validate_layout(self.path, infos, size - self._data_start)
                self._infos = {info.name: info for info in ordered}
                # Copy-on-write: writable views without a copy, and the file is never modified.
                self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
        except OSError as exc:
            raise SafetensorsError(self.path, f"cannot read: {exc.strerror or exc}") from None

    def __enter__(self) -> SafetensorsFile:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Drop the memory map; tensors already handed out keep it alive until they are freed."""
        # Never `mmap.close()`: torch views hold a reference to the map but no buffer export,
        # so closing would unmap memory under live tensors. The last reference unmaps it.
        self._map = None

    def keys(self) -> list[str]:
        """Tensor names, in the order of their data in the file."""
        return list(self._infos)

    def __contains__(self, name: object) -> bool:
        return name in self._infos

    def __len__(self) -> int:
        return len(self._infos)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._infos))

    def metadata(self) -> dict[str, str]:
        """The header's `__metadata__` (empty when there is none)."""
        return dict(self._metadata)

    def info(self, name: str) -> TensorInfo:
        """Dtype, shape and byte span of one tensor, without reading it."""
        info = self._infos.get(name)
        if info is None:
            raise SafetensorsError(self.path, f"no tensor named {name!r}")
        return info

    def get_tensor(self, name: str, device: str | torch.device | None = None) -> torch.Tensor:
        """One tensor: a zero-copy view of the file when aligned, moved to `device` if given."""
        info = self.info(name)
        dtype = info.torch_dtype
        if dtype is None:
            raise SafetensorsError(self.path, f"tensor {name!r}: torch has no {info.dtype} type")
        if self._map is None:
            raise SafetensorsError(self.path, "file is closed")
        begin, end = info.data_offsets
        start = self._data_start + begin
        numel = (end - begin) // dtype.itemsize
        if numel == 0:
            tensor = torch.empty(info.shape, dtype=dtype)
        elif start % dtype.itemsize == 0:
            tensor = torch.frombuffer(self._map, dtype=dtype, count=numel, offset=start)
        else:  # a third-party writer left the data misaligned: copy rather than risk it
            tensor = torch.frombuffer(
                bytearray(self._map[start : start + end - begin]), dtype=dtype
            )
        tensor = tensor.view(info.shape)
        return tensor if device is None else tensor.to(device)


def safe_open(path: str | os.PathLike[str]) -> SafetensorsFile:
    """Open and validate a safetensors file (a context manager).

    Args:
        path: the `.safetensors` file.

    Raises:
        SafetensorsError: the file is missing, unreadable or malformed in any way.
    """
    return SafetensorsFile(path)


def load_file(
    path: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file (memory-mapped views on the CPU).

    Args:
        path: the `.safetensors` file.
        device: where the tensors should live.
    """
    with safe_open(path) as f:
        cpu = torch.device(device).type == "cpu"
        return {name: f.get_tensor(name, None if cpu else device) for name in f}


def _read_index(index_path: Path) -> dict[str, list[str]]:
    """Shard filename -> the tensor names the index puts there, all checked."""
    try:
        index = json.loads(index_path.read_bytes(), object_pairs_hook=_no_duplicates)
    except OSError as exc:
        raise SafetensorsError(index_path, f"cannot read: {exc.strerror or exc}") from None
    except (ValueError, RecursionError) as exc:
        raise SafetensorsError(index_path, f"not valid JSON ({exc})") from None
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise SafetensorsError(index_path, "no weight_map object")
    shards: dict[str, list[str]] = {}
    for name, shard in weight_map.items():
        if not isinstance(shard, str) or shard in ("", ".", "..") or Path(shard).name != shard:
            raise SafetensorsError(
                index_path, f"tensor {name!r}: shard {shard!r} is not a plain file name"
            )
        shards.setdefault(shard, []).append(name)
    return shards


def load_checkpoint(
    model_dir: str | os.PathLike[str],
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield `(name, tensor)` for every weight of a model folder, one file at a time.

    Reads `model.safetensors`, or the shards listed by `model.safetensors.index.json`; each
    shard must hold exactly the tensors the index assigns to it.

    Args:
        model_dir: a Hugging Face style model folder.
        device: where the tensors should live.
        dtype: cast floating-point tensors to this dtype (others are left as they are).

    Raises:
        SafetensorsError: no checkpoint in the folder, or a file or the index is malformed.
    """
    model_dir = Path(model_dir)
    if (model_dir / SINGLE_FILE).is_file():
        plan: list[tuple[Path, list[str] | None]] = [(model_dir / SINGLE_FILE, None)]
    elif (model_dir / INDEX_FILE).is_file():
        index = model_dir / INDEX_FILE
        plan = [(model_dir / shard, names) for shard, names in _read_index(index).items()]
    else:
        raise SafetensorsError(model_dir, f"no {SINGLE_FILE} or {INDEX_FILE} in this folder")
    for path, names in plan:
        with safe_open(path) as f:
            if names is not None and sorted(names) != sorted(f.keys()):
                missing = sorted(set(names) - set(f.keys()))
                extra = sorted(set(f.keys()) - set(names))
                raise SafetensorsError(
                    path,
                    f"shard does not match {INDEX_FILE}: missing {missing[:5]}, "
                    f"not assigned to it {extra[:5]}",
                )
            for name in f:
                tensor = f.get_tensor(name)
                if dtype is not None and tensor.is_floating_point():
                    tensor = tensor.to(dtype)
                yield name, tensor.to(device)


def _header_bytes(
    path: Path,
    layout: Mapping[str, tuple[torch.dtype, Sequence[int]]],
    metadata: Mapping[str, str] | None,
) -> tuple[bytes, list[str]]:
    """The padded header and the write order (dtype rank descending, then name: as official)."""
    entries: dict[str, tuple[str, list[int], int]] = {}
    for name, (dtype, shape) in layout.items():
        dtype_name = _dtype_name(dtype)
        if not isinstance(name, str) or not _utf8_ok(name) or name == _METADATA_KEY:
            raise SafetensorsError(path, f"cannot use {name!r} as a tensor name")
        if dtype_name is None:
            raise SafetensorsError(path, f"tensor {name!r}: safetensors has no type for {dtype}")
        numel = 1
        for dim in shape:
            numel *= int(dim)
        entries[name] = (dtype_name, [int(d) for d in shape], numel * dtype.itemsize)
    order = sorted(entries, key=lambda n: (-_RANK[entries[n][0]], n))
    header: dict[str, Any] = {}
    if metadata:
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            raise SafetensorsError(path, "metadata must map strings to strings")
        header[_METADATA_KEY] = dict(sorted(metadata.items()))
    offset = 0
    for name in order:
        dtype_name, shape, nbytes = entries[name]
        header[name] = {
            "dtype": dtype_name,
            "shape": shape,
            "data_offsets": [offset, offset + nbytes],
        }
        offset += nbytes
    try:
        raw = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise SafetensorsError(path, "metadata is not valid UTF-8") from None
    raw += b" " * (-len(raw) % 8)  # the data section starts 8-aligned
    if len(raw) > MAX_HEADER_BYTES:
        raise SafetensorsError(path, f"header would be {len(raw)} bytes, over the limit")
    return len(raw).to_bytes(8, "little") + raw, order


def write_tensors(
    path: str | os.PathLike[str],
    layout: Mapping[str, tuple[torch.dtype, Sequence[int]]],
    produce: Callable[[str], torch.Tensor],
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Write a safetensors file whose tensors are made one at a time, so few are in memory.

    The file is written beside `path` and renamed into place, so a failure leaves no half file.

    Args:
        path: the file to write.
        layout: name -> (dtype, shape) of every tensor, known before any is made.
        produce: called once per name, in file order; must return that dtype and shape.
        metadata: the header's `__metadata__` (string to string).

    Raises:
        SafetensorsError: a name, dtype, produced tensor or the metadata cannot be written.
    """
    path = Path(path)
    header, order = _header_bytes(path, layout, metadata)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        with open(partial, "wb") as f:
            f.write(header)
            for name in order:
                tensor = produce(name)
                dtype, shape = layout[name]
                if tensor.dtype != dtype or tuple(tensor.shape) != tuple(shape):
                    raise SafetensorsError(
                        path,
                        f"tensor {name!r} is {tensor.dtype} {tuple(tensor.shape)}, "
                        f"expected {dtype} {tuple(shape)}",
                    )
                flat = tensor.detach().to("cpu").contiguous().reshape(-1)
                f.write(flat.view(torch.uint8).numpy().data)
        os.replace(partial, path)
    except OSError as exc:
        raise SafetensorsError(path, f"cannot write: {exc.strerror or exc}") from None
    finally:
        partial.unlink(missing_ok=True)


def save_file(
    tensors: Mapping[str, torch.Tensor],
    path: str | os.PathLike[str],
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Write tensors to a safetensors file the official library reads back bit-exactly.

    Args:
        tensors: name -> tensor (any device; non-contiguous tensors are copied).
        path: the file to write.
        metadata: the header's `__metadata__` (string to string).
    """
    layout = {name: (t.dtype, tuple(t.shape)) for name, t in tensors.items()}
    write_tensors(path, layout, tensors.__getitem__, metadata)
