"""A GGUF file's header read without trusting any length in it (no torch, no `gguf` package).

Every length, count and offset is checked against the bytes left in the file before it is used,
array nesting is bounded, and every fault is a `ValueError` naming the file. The neuron's model
scan reads metadata with it, and the importer runs it before the `gguf` package's reader, whose
loops trust the counts they read: a damaged count can make that reader allocate without end.
"""

from __future__ import annotations

import math
import os
import struct
from pathlib import Path
from typing import Any, BinaryIO

__all__ = ["read_gguf_header"]

_SCALARS = {
    0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q",
    12: "<d",
}  # fmt: skip
_STRING, _ARRAY = 8, 9
_MAX_ARRAY_NESTING = 8


class _Reader:
    """Reads a GGUF header from `f`, each read bounded by the bytes left in the file."""

    def __init__(self, path: Path, f: BinaryIO) -> None:
        self.path = path
        self.f = f
        self.size = os.fstat(f.fileno()).st_size

    def fault(self, what: str) -> ValueError:
        return ValueError(f"{self.path}: {what}")

    def left(self) -> int:
        return self.size - self.f.tell()

    def take(self, size: int) -> bytes:
        if size > self.left():
            raise self.fault("truncated GGUF header")
        return self.f.read(size)

    def unpack(self, fmt: str) -> Any:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        return self.take(self.unpack("<Q")).decode("utf-8", errors="replace")

    def value(self, kind: int, depth: int = 0) -> Any:
        """A scalar or string value; arrays are skipped (None)."""
        if kind in _SCALARS:
            return self.unpack(_SCALARS[kind])
        if kind == _STRING:
            return self.string()
        if kind != _ARRAY:
            raise self.fault(f"unknown GGUF value type {kind}")
        if depth >= _MAX_ARRAY_NESTING:
            raise self.fault("GGUF arrays nested too deep")
        item, count = self.unpack("<I"), self.unpack("<Q")
        if item in _SCALARS:
            skip = count * struct.calcsize(_SCALARS[item])
            if skip > self.left():
                raise self.fault("truncated GGUF header")
            self.f.seek(skip, 1)
        else:
            for _ in range(count):  # each item takes at least 8 bytes: bounded by the file
                self.value(item, depth + 1)
        return None


def read_gguf_header(path: Path) -> tuple[dict[str, Any], int]:
    """A GGUF file's scalar metadata (arrays skipped) and its tensors' total element count.

    Reads the header only (the `gguf` package's reader parses every vocabulary entry, which
    takes seconds; this skips them).

    Raises:
        ValueError: not a GGUF file, an unsupported version, or a damaged header.
    """
    with path.open("rb") as f:
        r = _Reader(path, f)
        if f.read(4) != b"GGUF":
            raise r.fault("not a GGUF file")
        version = r.unpack("<I")
        if version < 2:
            raise r.fault(f"GGUF version {version} is not supported")
        tensors, fields = r.unpack("<Q"), r.unpack("<Q")
        meta: dict[str, Any] = {}
        for _ in range(fields):
            key = r.string()
            found = r.value(r.unpack("<I"))
            if found is not None:
                meta[key] = found
        numel = 0
        for _ in range(tensors):
            r.string()
            dims = [r.unpack("<Q") for _ in range(r.unpack("<I"))]
            r.unpack("<I")  # the tensor's type
            r.unpack("<Q")  # its offset
            numel += math.prod(dims)
    return meta, numel
