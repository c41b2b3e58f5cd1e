"""GGUF tensors kept quantized: llama.cpp's blocks repacked into the layouts of `quant.py`.

Q4_0, Q4_1 and Q4_K are 4-bit codes with a scale and an offset per 32 weights, which is our
int4 layout at group size 32, so their codes are copied as they are: Q4_0 and Q4_1 exactly,
Q4_K with each sub-block's `d * sc` and `dmin * m` rounded to float16 (our scales' type; a
relative 2^-11 of a step). Q8_0, Q5_K and Q6_K hold a scale per 32 or 16 weights, finer than
int8's one per row, so they are dequantized one tensor at a time and quantized per channel.
Every other type is dequantized and quantized to the target.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import numpy as np
import torch
from gguf import GGMLQuantizationType, ReaderTensor
from gguf.quants import Q4_K, dequantize

from cortex.engine.quant import QuantizedTensor, QuantSpec, pack_int4

__all__ = ["INT4_TYPES", "INT8_TYPES", "QuantizedWriter", "gguf_quantized", "target_spec"]

T = GGMLQuantizationType
INT4_TYPES: Final = frozenset({T.Q4_0, T.Q4_1, T.Q4_K})
"""Repacked into int4 (group 32) without requantizing."""
INT8_TYPES: Final = frozenset({T.Q8_0, T.Q5_K, T.Q6_K, T.Q5_0, T.Q5_1})
"""Kept as int8 (per channel) when int4 is asked for: 5 bits and more would lose in 4."""
_INT4_GROUP: Final = 32
_BLOCK_BYTES: Final = {T.Q4_0: 18, T.Q4_1: 20, T.Q4_K: 144}


def _blocks(tensor: ReaderTensor, rows: int) -> np.ndarray[Any, Any]:
    """The tensor's bytes as (rows, blocks per row, block bytes)."""
    raw = np.asarray(tensor.data).reshape(-1).view(np.uint8)
    return raw.reshape(rows, -1, _BLOCK_BYTES[tensor.tensor_type])


def _half(raw: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Two-byte little-endian float16 fields (..., 2) -> float32 (...)."""
    return np.ascontiguousarray(raw).view(np.float16)[..., 0].astype(np.float32)


def _q4_codes(tensor: ReaderTensor, rows: int) -> tuple[Any, Any, Any]:
    """(codes (rows, cols) 0..15, scales, mins (rows, cols / 32)) of a Q4_0/Q4_1/Q4_K tensor."""
    blocks = _blocks(tensor, rows)
    kind = tensor.tensor_type
    if kind in (T.Q4_0, T.Q4_1):
        d = _half(blocks[..., 0:2])
        offset = 4 if kind == T.Q4_1 else 2
        qs = blocks[..., offset:]  # (rows, nb, 16): element j low nibble, j + 16 high
        codes = np.concatenate((qs & 0x0F, qs >> 4), axis=-1)
        mins = _half(blocks[..., 2:4]) if kind == T.Q4_1 else -8.0 * d
        return codes.reshape(rows, -1), d, mins
    # Q4_K: 256-weight super-blocks of 8 sub-blocks; d, dmin, 12 bytes of 6-bit sc/m, 128 qs.
    nb = blocks.shape[1]
    d, dmin = _half(blocks[..., 0:2]), _half(blocks[..., 2:4])
    sc, m = Q4_K.get_scale_min(blocks[..., 4:16].reshape(rows * nb, 12))
    sc = sc.reshape(rows, nb, 8).astype(np.float32)
    m = m.reshape(rows, nb, 8).astype(np.float32)
    qs = blocks[..., 16:].reshape(rows, nb, 4, 1, 32)
    codes = (qs >> np.array([0, 4], dtype=np.uint8).reshape(1, 1, 1, 2, 1)) & 0x0F
    scales = (d[..., None] * sc).reshape(rows, -1)
    mins = -(dmin[..., None] * m).reshape(rows, -1)
    return codes.reshape(rows, -1), scales, mins


def gguf_quantized(tensor: ReaderTensor, shape: tuple[int, ...], bits: int) -> QuantizedTensor:
    """A GGUF matrix as a `QuantizedTensor` for a target of `bits` (4 or 8).

    With 4: Q4_0/Q4_1/Q4_K are repacked (group 32), the 5-to-8-bit types become int8, the rest
    is quantized to int4 group 32. With 8: everything becomes int8 per channel.

    Args:
        tensor: the GGUF tensor (a matrix in PyTorch's (out, in) order `shape`).
        shape: (rows, cols).
        bits: 4 or 8.
    """
    kind = tensor.tensor_type
    spec = target_spec(kind, bits, shape)
    if spec is None:
        raise ValueError(f"{tensor.name} is not a matrix")
    if spec.bits == 4 and kind in INT4_TYPES:
        codes, scales, mins = _q4_codes(tensor, shape[0])
        packed = pack_int4(torch.from_numpy(np.ascontiguousarray(codes)))
        half = (torch.from_numpy(np.ascontiguousarray(a)).half() for a in (scales, mins))
        return QuantizedTensor(spec, (packed, *half))
    values = dequantize(tensor.data, kind).astype(np.float32, copy=False).reshape(shape)
    return QuantizedTensor.quantize(torch.from_numpy(np.ascontiguousarray(values)), spec)


def target_spec(kind: GGMLQuantizationType, bits: int, shape: tuple[int, ...]) -> QuantSpec | None:
    """The layout a GGUF tensor of type `kind` takes for a target of `bits`; None: stays float.

    Vectors (norms, biases) stay float; an int4 target on a width that groups of 32 cannot
    cover takes int8.
    """
    if len(shape) != 2:
        return None
    if bits == 4 and kind not in INT8_TYPES and shape[1] % _INT4_GROUP == 0:
        return QuantSpec(4, _INT4_GROUP)
    return QuantSpec(8)


class QuantizedWriter:
    """`layout` and `produce` for `write_tensors` with the matrices of a GGUF file kept quantized.

    Each matrix `X.weight` becomes the pieces `X.qweight`, `X.scales` (and `X.mins` for int4)
    of `QuantizedTensor.named_pieces`; the rest is produced as before, in float.

    Args:
        layout: the float layout, name -> (dtype, shape).
        source_of: the GGUF tensor a name comes from, or None to keep it float.
        bits: 4 (Q4 types repacked, see `gguf_quantized`) or 8.
        produce_float: the float tensor of a name (the caller's converter).
        reorder_rows: undoes a row permutation of the file (llama.cpp's Q/K `permute`) on
            any tensor whose rows are the matrix's rows.
        advance: called once per matrix written (a progress bar).
    """

    def __init__(
        self,
        layout: dict[str, tuple[torch.dtype, tuple[int, ...]]],
        source_of: Callable[[str], ReaderTensor | None],
        bits: int,
        produce_float: Callable[[str], torch.Tensor],
        reorder_rows: Callable[[ReaderTensor, torch.Tensor], torch.Tensor],
        advance: Callable[[], object] = lambda: None,
    ) -> None:
        self._produce_float = produce_float
        self._reorder_rows = reorder_rows
        self._advance = advance
        self._bits = bits
        self._pieces: dict[str, tuple[str, int]] = {}  # piece name -> (matrix name, index)
        self._sources: dict[str, ReaderTensor] = {}
        self._current: tuple[str, QuantizedTensor] | None = None
        self.layout: dict[str, tuple[torch.dtype, tuple[int, ...]]] = {}
        for name, (dtype, shape) in layout.items():
            source = source_of(name) if name.endswith(".weight") else None
            spec = None if source is None else target_spec(source.tensor_type, bits, shape)
            if source is None or spec is None:
                self.layout[name] = (dtype, shape)
                continue
            self._sources[name] = source
            rows, cols = shape
            if spec.bits == 8:
                pieces = [(torch.int8, (rows, cols)), (torch.float32, (rows,))]
            else:
                groups = (rows, cols // _INT4_GROUP)
                pieces = [(torch.uint8, (rows, cols // 2)), (torch.float16, groups)]
                pieces.append((torch.float16, groups))
            stem = name.removesuffix(".weight")
            parts = ("qweight", "scales", "mins")[: len(pieces)]
            for index, (part, piece) in enumerate(zip(parts, pieces, strict=True)):
                self._pieces[f"{stem}.{part}"] = (name, index)
                self.layout[f"{stem}.{part}"] = piece

    def produce(self, name: str) -> torch.Tensor:
        """The tensor to write under `name` (a piece of a quantized matrix, or a float one)."""
        if name not in self._pieces:
            return self._produce_float(name)
        matrix, index = self._pieces[name]
        if self._current is None or self._current[0] != matrix:
            source = self._sources[matrix]
            rows, cols = (int(d) for d in reversed(source.shape.tolist()))
            quantized = gguf_quantized(source, (rows, cols), self._bits)
            pieces = tuple(self._reorder_rows(source, p) for p in quantized.pieces)
            self._current = (matrix, QuantizedTensor(quantized.spec, pieces))
            self._advance()
        return self._current[1].pieces[index]
