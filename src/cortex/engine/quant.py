"""Weight-only quantization: the int8 and int4 layouts, their references, `QuantizedWeight`.

Two layouts, both row-wise (a row is one output feature), so quantizing a block of rows gives
the same bytes as quantizing the whole matrix and slicing: fused q/k/v and gate/up matrices
are filled piece by piece, and a checkpoint may be quantized one tensor at a time.

* **int8**, per output channel, symmetric: `qweight` int8 `(out, in)`, `scales` float32
  `(out,)`; `w[n, k] = qweight[n, k] * scales[n]` with `qweight` in [-127, 127].
* **int4**, group-wise along the input dimension, asymmetric: `qweight` uint8 `(out, in / 2)`
  with element `2j` in the low nibble of byte `j` and `2j + 1` in the high nibble, `scales` and
  `mins` float16 `(out, in / group_size)`; `w[n, k] = q * scales[n, g] + mins[n, g]` with
  `q` in [0, 15] and `g = k // group_size`. GGUF's Q4_0 (`mins = -8 d`), Q4_1 (`mins = m`) and
  Q4_K (`scales = d * sc`, `mins = -dmin * m` per 32-element sub-block) are this layout at
  group size 32, so they import without loss. A float matrix is quantized to it by a search
  per group for the scale and min of least magnitude-weighted squared error
  (`quantize_int4`); the `int4` setting mixes group sizes 32 and 64 by how much each matrix's
  error costs (`BULK_GROUP_SIZE`), `int4-g32`/`-g64`/`-g128` use one everywhere.

This canonical form is what checkpoints store and what the Triton kernel reads. On CPU,
`QuantizedWeight.prepare` repacks it once for torch's packed weight-only matmuls
(`aten._weight_int8pack_mm`, `aten._weight_int4pack_mm_for_cpu`), which want bfloat16 scales.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Final, Literal

import torch
from torch import nn

from cortex.engine.kernels.quant_reference import dequantize_int4, dequantize_int8, unpack_int4
from cortex.errors import CortexError

__all__ = [
    "BULK_GROUP_SIZE",
    "GROUP_SIZES",
    "QUANT_MODES",
    "SENSITIVE_GROUP_SIZE",
    "QuantError",
    "QuantMode",
    "QuantRows",
    "QuantSpec",
    "QuantizedTensor",
    "QuantizedWeight",
    "describe_quant",
    "gather_quantized",
    "pack_int4",
    "parse_quant",
    "prepare_model",
    "quant_specs",
    "quantize_int4",
    "quantize_int8",
    "swap_in_quantized",
]

QuantMode = Literal["none", "bf16", "int8", "int4"]
QUANT_MODES: Final = ("none", "bf16", "int8", "int4")
GROUP_SIZES: Final = (32, 64, 128)
SENSITIVE_GROUP_SIZE: Final = 32
BULK_GROUP_SIZE: Final = 64
"""`int4` (no group size named) mixes two group sizes by how much a matrix's error costs.

Group 32 (`SENSITIVE_GROUP_SIZE`) for the embedding and LM head, q/k/v, down_proj, and every
matrix of the first and last layer; group 64 (`BULK_GROUP_SIZE`) for o_proj and gate/up of the
other layers, and for MoE experts (one layout per layer's experts); group 32 wherever the
width is no multiple of 64. Measured on SmolLM2-135M (`benchmarks/bench_quant.py`, min/max
rounding, one kind of matrix at group 64 and the rest at 32): perplexity +18 points for q/k/v,
+11 for down_proj, +4 for gate/up, +1 for o_proj; the embedding (also the LM head) costs +5.5
at group 32 alone. The mix holds about 0.6 bytes a weight (0.30x bfloat16), where group 32
everywhere takes 0.625 (0.31x) and group 64 0.5625 (0.28x, +53% perplexity)."""
_INT4_SPELLING = re.compile(r"int4(?:-g(\d+))?")
# bfloat16 activations are what torch's packed CPU kernels are fast with (3-9x float32's speed).
_CPU_KERNEL_DTYPE = torch.bfloat16
# torch's CPU int4 packing interleaves rows in blocks of 64.
_CPU_INT4_BLOCK_N = 64
# The int4 search's grids: 14, 15, 16 steps over each group's [min, max], each refitted once.
# Weights are quantized per chunk of this many, so the temporaries stay in cache.
_INT4_SEARCH_STEPS: Final = (14.0, 15.0, 16.0)
_INT4_CHUNK: Final = 2**16
_MIN_SCALE: Final = 2**-24


class QuantError(CortexError):
    """A `quant` setting that is not known, or that a layer's shape cannot take.

    The message names the key (`quant`) and the layer at fault.
    """


@dataclass(frozen=True)
class QuantSpec:
    """How weights are stored: `bits` 8 (per channel) or 4 (group-wise, `group_size` 32/64/128).

    `QuantSpec(4)` without a group size is the `int4` setting's mix (`BULK_GROUP_SIZE`), which
    `quant_specs` resolves to a group size per matrix; a stored matrix always has one.
    """

    bits: Literal[4, 8]
    group_size: int | None = None

    def __str__(self) -> str:
        if self.bits == 8:
            return "int8"
        return f"int4-g{self.group_size}" if self.group_size else "int4"

    @property
    def bytes_per_weight(self) -> float:
        """Resident bytes a weight takes: int8 one (and a scale per row), int4 half a byte and
        a 16-bit scale and min per group (about 0.6 for the `int4` mix)."""
        if self.bits == 8:
            return 1.0
        return 0.5 + 4 / self.group_size if self.group_size else 0.6

    def check_shape(self, name: str, out_features: int, in_features: int) -> None:
        """Raise `QuantError` naming `name` when a `(out, in)` matrix cannot take this layout."""
        if self.bits == 4:
            group = self.group_size or SENSITIVE_GROUP_SIZE
            if in_features % group:
                raise QuantError(
                    f"quant={str(self)!r}: {name} has {in_features} input features, not a "
                    f"multiple of the group size {group}; choose another group size "
                    f"(int4-g32, int4-g64, int4-g128) or int8"
                )


def parse_quant(value: str | None) -> tuple[QuantMode, QuantSpec | None]:
    """The mode and the integer layout (None for none/bf16) a `quant` setting names.

    Accepts `none`, `bf16`, `int8`, `int4` (group sizes 32 and 64 by matrix, see
    `BULK_GROUP_SIZE`), `int4-g32`, `int4-g64`, `int4-g128` (that group size everywhere); None
    means `none`.

    Raises:
        QuantError: any other value (the message names the key `quant`).
    """
    text = (value or "none").strip().lower()
    if text in ("none", "bf16"):
        return ("none" if text == "none" else "bf16"), None
    if text == "int8":
        return "int8", QuantSpec(8)
    match = _INT4_SPELLING.fullmatch(text)
    if match:
        if match.group(1) is None:
            return "int4", QuantSpec(4)
        group = int(match.group(1))
        if group in GROUP_SIZES:
            return "int4", QuantSpec(4, group)
    raise QuantError(
        f"quant: {value!r} is not one of none, bf16, int8, int4 "
        f"(int4-g32, int4-g64, int4-g128 name the group size)"
    )


# -- references: quantize, dequantize, nibble packing ---------------------------------------


def quantize_int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-output-channel symmetric int8: `(qweight int8 (out, in), scales float32 (out,))`."""
    w = weight.float()
    scales = (w.abs().amax(dim=1) / 127).clamp_min(1e-12)
    qweight = torch.round(w / scales[:, None]).clamp_(-127, 127).to(torch.int8)
    return qweight, scales


def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """(out, in) values in [0, 15] -> (out, in / 2) uint8, element 2j low nibble, 2j+1 high."""
    q8 = q.to(torch.uint8)
    return q8[:, 0::2] | (q8[:, 1::2] << 4)


def quantize_int4(
    weight: torch.Tensor, group_size: int, *, search: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Group-wise asymmetric int4: `(qweight uint8 (out, in/2), scales, mins float16 (out, in/g))`.

    With `search` (the default), each group takes the scale and min of least weighted squared
    error among a few candidates (`_int4_search`); without, its [min, max] maps onto 0..15.
    Either way the scale and min are rounded to float16 before the codes are chosen, so
    dequantizing with the stored values is what was quantized to, and the result depends on
    the weights alone (no randomness, no calibration data).
    """
    out_features, in_features = weight.shape
    groups = in_features // group_size
    q = torch.empty(out_features, in_features, dtype=torch.uint8, device=weight.device)
    scales = torch.empty(out_features, groups, dtype=torch.float16, device=weight.device)
    mins = torch.empty_like(scales)
    # Rows in chunks of about _INT4_CHUNK weights: the search's temporaries stay in cache.
    step = max(1, _INT4_CHUNK // in_features)
    for start in range(0, out_features, step):
        rows = weight[start : start + step].float().reshape(-1, group_size)  # (groups, g)
        fit = _int4_search if search else _int4_min_max
        codes, scale, low = fit(rows)
        q[start : start + step] = codes.reshape(-1, in_features)
        scales[start : start + step] = scale.reshape(-1, groups)
        mins[start : start + step] = low.reshape(-1, groups)
    return pack_int4(q), scales, mins


def _int4_codes(x: torch.Tensor, scale: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
    """The nearest of the 16 levels `low + q * scale` to each weight: q in [0, 15], as float."""
    return (x - low).div_(scale).round_().clamp_(0, 15)


def _int4_codes_fast(x: torch.Tensor, scale: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
    """`_int4_codes` in three passes instead of four (`x / s - low / s`, one fused op); a
    weight exactly halfway between two levels may round the other way."""
    inverse = 1 / scale
    return torch.addcmul(-low * inverse, x, inverse).round_().clamp_(0, 15)


def _int4_min_max(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Codes, float16 scales and mins (groups,) of groups `x (groups, g)`: [min, max] -> 0..15."""
    low, high = x.amin(dim=1), x.amax(dim=1)
    scale = ((high - low) / 15).clamp_min(_MIN_SCALE).half()
    low16 = low.half()
    return _int4_codes(x, scale.float()[:, None], low16.float()[:, None]), scale, low16


def _int4_search(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Codes, float16 scales and mins (groups,) of groups `x (groups, g)` of least weighted error.

    The error weighs each weight by its magnitude `|w|`, so the large weights (which a plain
    least-squares fit would clip) stay close; on SmolLM2 unweighted least squares lowered the
    squared error and *raised* perplexity, the weighted one lowered both. Candidates: the
    [min, max] grid itself, and grids of 14, 15 and 16 steps centred on [min, max], each
    refined once: the weighted least-squares scale and min for its nearest codes, then the
    nearest codes for those.
    Each group keeps the candidate of least error with its scale and min rounded to float16
    (the first on a tie), so the result is never worse than min/max rounding by that measure.
    (The approach of llama.cpp's k-quant quantizers, which also weigh by magnitude.)
    """
    weights = x.abs()
    weighted_x = weights * x
    # Per-group sums that do not depend on the codes: sum w, sum w x, sum w x^2.
    fixed = (weights.sum(dim=1), weighted_x.sum(dim=1), torch.linalg.vecdot(weighted_x, x))
    w_sum, wx_sum, _ = fixed
    low, high = x.amin(dim=1), x.amax(dim=1)
    span = high - low
    # Candidate 0 is min/max rounding; the others, centred grids of other step counts.
    steps = torch.tensor((15.0, *_INT4_SEARCH_STEPS), device=x.device)[:, None]
    scale = (span / steps).clamp_min(_MIN_SCALE)  # (candidates, groups)
    offset = low + (span - 15 * scale) / 2
    min_max_scale, min_max_low = scale[0].half(), low.half()
    scale[0], offset[0] = min_max_scale.float(), min_max_low.float()
    codes = _int4_codes_fast(x, scale[..., None], offset[..., None])  # (candidates, groups, g)
    code_sums = _int4_code_sums(weights, weighted_x, codes)
    wq_sum, wqq_sum, wqx_sum = code_sums
    # The weighted least-squares scale and offset for each candidate's codes (2x2 normal
    # equations), where they are solvable; min/max keeps its own.
    det = w_sum * wqq_sum - wq_sum * wq_sum
    solvable = det > 0
    det = torch.where(solvable, det, 1.0)
    fitted_scale = (w_sum * wqx_sum - wq_sum * wx_sum) / det
    fitted_offset = (wqq_sum * wx_sum - wq_sum * wqx_sum) / det
    solvable &= fitted_scale > _MIN_SCALE
    solvable[0] = False
    scale16 = torch.where(solvable, fitted_scale, scale).half()
    offset16 = torch.where(solvable, fitted_offset, offset).half()
    # The nearest codes for the refitted (and rounded) scale and offset, which can only help.
    codes = _int4_codes_fast(x, scale16.float()[..., None], offset16.float()[..., None])
    error = _int4_error(fixed, _int4_code_sums(weights, weighted_x, codes), scale16, offset16)
    best = error.min(dim=0, keepdim=True).indices
    groups, size = x.shape
    best_codes = codes.gather(0, best[..., None].expand(1, groups, size))[0]
    return best_codes, scale16.gather(0, best)[0], offset16.gather(0, best)[0]


def _int4_code_sums(
    weights: torch.Tensor, weighted_x: torch.Tensor, codes: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per group: sum w q, sum w q^2, sum w q x."""
    weighted_codes = weights * codes
    return (
        weighted_codes.sum(dim=-1),
        torch.linalg.vecdot(weighted_codes, codes),
        torch.linalg.vecdot(weighted_x, codes),
    )


def _int4_error(
    fixed: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    code_sums: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    scale: torch.Tensor,
    offset: torch.Tensor,
) -> torch.Tensor:
    """Per group, sum w (s q + m - x)^2 expanded into the sums (no pass over the weights)."""
    w_sum, wx_sum, wxx_sum = fixed
    wq_sum, wqq_sum, wqx_sum = code_sums
    s, m = scale.float(), offset.float()
    return (
        wxx_sum
        + s * (s * wqq_sum - 2 * wqx_sum)
        + m * (m * w_sum - 2 * wx_sum)
        + 2 * s * m * wq_sum
    )


# -- quantized tensors in checkpoints ---------------------------------------------------------


@dataclass(frozen=True)
class QuantizedTensor:
    """One quantized `(out, in)` matrix as a checkpoint stores it: `X.qweight`, `X.scales`
    (and `X.mins` for int4) beside each other, read back as the one tensor `X.weight`.
    """

    spec: QuantSpec
    pieces: tuple[torch.Tensor, ...]  # qweight, scales[, mins]

    @classmethod
    def quantize(cls, weight: torch.Tensor, spec: QuantSpec) -> QuantizedTensor:
        """Quantize a float `(out, in)` matrix."""
        if spec.bits == 8:
            return cls(spec, quantize_int8(weight))
        assert spec.group_size is not None
        return cls(spec, quantize_int4(weight, spec.group_size))

    @property
    def shape(self) -> tuple[int, int]:
        """The logical (out, in) shape."""
        qweight = self.pieces[0]
        width = qweight.shape[1] * (2 if self.spec.bits == 4 else 1)
        return int(qweight.shape[0]), int(width)

    def dequantize(self) -> torch.Tensor:
        """The matrix in float32."""
        if self.spec.bits == 8:
            return dequantize_int8(*self.pieces)
        assert self.spec.group_size is not None
        qweight, scales, mins = self.pieces
        return dequantize_int4(qweight, scales, mins, self.spec.group_size)

    def named_pieces(self, name: str) -> list[tuple[str, torch.Tensor]]:
        """The checkpoint entries of this tensor saved as `name` (`X.weight` -> `X.qweight`...)."""
        stem = name.removesuffix(".weight")
        parts = ("qweight", "scales", "mins")
        return [(f"{stem}.{part}", piece) for part, piece in zip(parts, self.pieces, strict=False)]


def gather_quantized(
    weights: Iterable[tuple[str, torch.Tensor]],
) -> Iterator[tuple[str, torch.Tensor | QuantizedTensor]]:
    """A checkpoint's tensors with each `X.qweight`/`X.scales`/`X.mins` group as `X.weight`.

    int8 or int4 and the group size follow from the pieces' shapes (int4 has `mins`).

    Raises:
        CortexError: a group lacks a piece or its shapes do not make a layout.
    """
    groups: dict[str, dict[str, torch.Tensor]] = {}
    for name, tensor in weights:
        stem, _, part = name.rpartition(".")
        if part in ("qweight", "scales", "mins"):
            groups.setdefault(stem, {})[part] = tensor
        else:
            yield name, tensor
    for stem, pieces in groups.items():
        yield f"{stem}.weight", _as_quantized(stem, pieces)


def _as_quantized(stem: str, pieces: dict[str, torch.Tensor]) -> QuantizedTensor:
    qweight, scales, mins = pieces.get("qweight"), pieces.get("scales"), pieces.get("mins")
    if qweight is None or scales is None or qweight.dim() != 2:
        raise CortexError(f"quantized tensor {stem} lacks its qweight or scales")
    if mins is None and qweight.dtype == torch.int8 and scales.shape == qweight.shape[:1]:
        return QuantizedTensor(QuantSpec(8), (qweight, scales))
    if mins is not None and qweight.dtype == torch.uint8 and scales.dim() == 2:
        in_features, groups = qweight.shape[1] * 2, scales.shape[1]
        group = in_features // groups if groups else 0
        if group in GROUP_SIZES and group * groups == in_features and mins.shape == scales.shape:
            return QuantizedTensor(QuantSpec(4, group), (qweight, scales, mins))
    raise CortexError(f"quantized tensor {stem} has pieces that make no int8/int4 layout")


# -- the module ------------------------------------------------------------------------------


class QuantRows:
    """Rows `start:stop` of a `QuantizedWeight`: the slot one checkpoint tensor fills.

    `copy_(float tensor)` quantizes into the rows; `load(part, tensor)` copies a stored piece
    (`qweight`, `scales` or `mins`) of a checkpoint that is already quantized.
    """

    def __init__(self, weight: QuantizedWeight, start: int, stop: int) -> None:
        self.weight = weight
        self.start, self.stop = start, stop
        self.shape = (stop - start, weight.in_features)

    def copy_(self, tensor: torch.Tensor | QuantizedTensor) -> None:
        """Fill these rows from a float tensor (quantized here) or a quantized one.

        A quantized tensor of the same layout is copied as it is (no loss); one of another
        layout is dequantized and quantized again.
        """
        spec = self.weight.spec
        if isinstance(tensor, QuantizedTensor) and tensor.spec != spec:
            tensor = tensor.dequantize()
        if not isinstance(tensor, QuantizedTensor):
            tensor = QuantizedTensor.quantize(tensor, spec)
        for part, piece in zip(self.weight.parts, tensor.pieces, strict=True):
            self.load(part, piece)

    def load(self, part: str, tensor: torch.Tensor) -> None:
        """Copy a stored piece (`qweight`, `scales`, `mins`) into these rows.

        Raises:
            CortexError: the piece's shape or kind does not fit the layout.
        """
        slot = self.weight.canonical(part)[self.start : self.stop]
        if part not in self.weight.parts or tuple(tensor.shape) != tuple(slot.shape):
            raise CortexError(
                f"quantized piece {part!r} of shape {tuple(tensor.shape)} does not fit "
                f"{self.weight.spec} rows of shape {tuple(slot.shape)}"
            )
        if tensor.dtype.is_floating_point != slot.dtype.is_floating_point:
            raise CortexError(f"quantized piece {part!r} has dtype {tensor.dtype}")
        slot.copy_(tensor)


class QuantizedWeight(nn.Module):
    """A `(out_features, in_features)` weight stored as int8 per channel or int4 group-wise.

    Built empty in the canonical layout (see the module docstring), filled through `rows()`,
    then `prepare()`d once for the device's kernels. Used as `weight(x)` (a linear layer
    without bias) or `weight.embedding(ids)` (rows, dequantized).

    Args:
        out_features: rows.
        in_features: columns; int4 needs a multiple of the group size.
        spec: the layout.
        device: where the weight lives.
        dtype: the activations' dtype (inputs and outputs).
        name: the layer's name, for error messages.
    """

    def __init__(
        self,
        out_features: int,
        in_features: int,
        spec: QuantSpec,
        *,
        device: torch.device | str,
        dtype: torch.dtype,
        name: str = "weight",
    ) -> None:
        super().__init__()
        spec.check_shape(name, out_features, in_features)
        self.out_features, self.in_features = out_features, in_features
        self.spec = spec
        self.dtype = dtype
        self.shape = (out_features, in_features)
        self._cpu_packed = False
        empty = torch.empty
        self.qweight: torch.Tensor
        self.scales: torch.Tensor
        self.mins: torch.Tensor | None
        if spec.bits == 8:
            self.parts: tuple[str, ...] = ("qweight", "scales")
            self.register_buffer("qweight", empty(self.shape, dtype=torch.int8, device=device))
            self.register_buffer("scales", empty(out_features, dtype=torch.float32, device=device))
            self.register_buffer("mins", None)
        else:
            assert spec.group_size is not None
            groups = in_features // spec.group_size
            self.parts = ("qweight", "scales", "mins")
            packed = (out_features, in_features // 2)
            self.register_buffer("qweight", empty(packed, dtype=torch.uint8, device=device))
            grid = (out_features, groups)
            self.register_buffer("scales", empty(grid, dtype=torch.float16, device=device))
            self.register_buffer("mins", empty(grid, dtype=torch.float16, device=device))

    @property
    def group_size(self) -> int | None:
        """int4's group size; None for int8."""
        return self.spec.group_size

    def canonical(self, part: str) -> torch.Tensor:
        """A canonical piece (`qweight`, `scales`, `mins`), before `prepare()`."""
        if self._cpu_packed:
            raise CortexError("a prepared QuantizedWeight no longer holds the canonical layout")
        tensor = getattr(self, part, None)
        if not isinstance(tensor, torch.Tensor):
            raise CortexError(f"{self.spec} has no piece {part!r}")
        return tensor

    def rows(self, start: int = 0, stop: int | None = None) -> QuantRows:
        """The slot for rows `start:stop` (default: all)."""
        return QuantRows(self, start, self.out_features if stop is None else stop)

    def copy_(self, tensor: torch.Tensor | QuantizedTensor) -> None:
        """Fill every row (see `QuantRows.copy_`)."""
        self.rows().copy_(tensor)

    def __getitem__(self, rows: slice) -> QuantRows:
        """`weight[a:b]`: the slot for those rows, as a float matrix's view would be."""
        start, stop, step = rows.indices(self.out_features)
        if step != 1:
            raise IndexError("a QuantizedWeight is sliced by contiguous rows only")
        return QuantRows(self, start, stop)

    @property
    def device(self) -> torch.device:
        """Where the weight lives."""
        return self.qweight.device

    def prepare(self) -> None:
        """Repack once for the device's kernels (CPU: torch's packed formats; CUDA: as is)."""
        if self._cpu_packed or self.qweight.device.type != "cpu":
            return
        if self.spec.bits == 8:
            self.scales = self.scales.to(_CPU_KERNEL_DTYPE)
        else:
            assert self.mins is not None and self.group_size is not None
            self.qweight, self.scales = _cpu_int4_pack(self.qweight, self.scales, self.mins)
            self.mins = None
        self._cpu_packed = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`x @ W.T` for x (tokens, in_features), in x's dtype."""
        if self._cpu_packed:
            return _cpu_linear(self, x)
        from cortex.engine.kernels.dispatch import weight_only_matmul

        return weight_only_matmul(x, self.qweight, self.scales, self.mins, self.group_size)

    def embedding(self, ids: torch.Tensor) -> torch.Tensor:
        """Rows `ids` of W, dequantized to the activation dtype: (len(ids), in_features)."""
        if self.spec.bits == 8:
            rows = self.qweight[ids].float() * self.scales[ids].float()[:, None]
            return rows.to(self.dtype)
        assert self.group_size is not None
        if self._cpu_packed:
            q, scales, mins = _cpu_int4_rows(self.qweight, self.scales, ids)
        else:
            assert self.mins is not None
            q, scales, mins = unpack_int4(self.qweight[ids]), self.scales[ids], self.mins[ids]
        tokens = q.shape[0]
        grouped = q.float().reshape(tokens, -1, self.group_size)
        rows = grouped * scales.float()[..., None] + mins.float()[..., None]
        return rows.reshape(tokens, self.in_features).to(self.dtype)

    def dequantize(self) -> torch.Tensor:
        """The whole matrix in float32 (tests, requantizing)."""
        return self.embedding(torch.arange(self.out_features, device=self.qweight.device)).float()

    def extra_repr(self) -> str:
        return f"{self.out_features}, {self.in_features}, {self.spec}"


def _cpu_int4_pack(
    qweight: torch.Tensor, scales: torch.Tensor, mins: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Canonical int4 -> torch's CPU packed weight and `(groups, out, 2)` scale-and-zero table.

    torch's kernel computes `(q - 8) * scale + zero`, so `zero = min + 8 * scale`. Rows are
    padded to a multiple of 64 (its row-block), so every row sits in the same place of a
    block (see `_cpu_int4_rows`).
    """
    out_features = qweight.shape[0]
    pad = -out_features % _CPU_INT4_BLOCK_N
    q = unpack_int4(qweight).to(torch.int32)
    s, m = scales.float(), mins.float()
    if pad:
        q = torch.cat((q, q.new_zeros(pad, q.shape[1])))
        s = torch.cat((s, s.new_zeros(pad, s.shape[1])))
        m = torch.cat((m, m.new_zeros(pad, m.shape[1])))
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 1)
    table = torch.stack((s, m + 8 * s), dim=-1).transpose(0, 1).contiguous()
    return packed, table.to(_CPU_KERNEL_DTYPE)


def _cpu_int4_rows(
    packed: torch.Tensor, table: torch.Tensor, ids: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows `ids` of a CPU-packed int4 weight: (q (n, in), scales (n, groups), mins (n, groups)).

    torch's layout is `[out / 64][in][32]` bytes: byte `j` of a block row holds row `j` of the
    block in its low nibble and row `32 + j` in its high nibble.
    """
    blocks, in_features = packed.shape[0] // _CPU_INT4_BLOCK_N, packed.shape[1] * 2
    half = _CPU_INT4_BLOCK_N // 2
    tiles = packed.reshape(blocks, in_features, half)
    block, within = ids // _CPU_INT4_BLOCK_N, ids % _CPU_INT4_BLOCK_N
    data = tiles[block, :, within % half]  # (n, in)
    q = torch.where((within < half)[:, None], data & 0xF, data >> 4)
    scale = table[:, ids, 0].T.float()
    zero = table[:, ids, 1].T.float()
    return q, scale, zero - 8 * scale


def _cpu_linear(weight: QuantizedWeight, x: torch.Tensor) -> torch.Tensor:
    x_kernel = x.to(_CPU_KERNEL_DTYPE)
    out: torch.Tensor
    if weight.spec.bits == 8:
        out = torch.ops.aten._weight_int8pack_mm(x_kernel, weight.qweight, weight.scales)
    else:
        assert weight.group_size is not None
        out = torch.ops.aten._weight_int4pack_mm_for_cpu(
            x_kernel, weight.qweight, weight.group_size, weight.scales
        )
        if out.shape[1] != weight.out_features:
            out = out[:, : weight.out_features]
    return out.to(x.dtype)


# -- swapping a model's weights --------------------------------------------------------------


def swap_in_quantized(
    model: nn.Module,
    slots: Mapping[str, object],
    specs: Mapping[str, QuantSpec],
) -> None:
    """Replace the float weight matrices that checkpoint tensors fill by empty `QuantizedWeight`s.

    `slots` maps checkpoint names to the views of the model's parameters they fill (fused
    q/k/v and gate/up rows included), and `specs` gives each checkpoint name to quantize its
    layout. A matrix filled by several tensors of different layouts takes int8 (the finer);
    a matrix some of whose tensors are not named in `specs` stays float. Tied parameters (an
    LM head that is the embedding) stay one object. Call before loading; the float matrices
    were never written, so dropping them frees no memory that was used.

    Raises:
        QuantError: int4 on a matrix whose width is not a multiple of the group size (the
            message names the parameter).
    """
    owners: dict[int, list[tuple[nn.Module, str, str]]] = {}
    for module_name, module in model.named_modules():
        for attr, param in module.named_parameters(recurse=False, remove_duplicate=False):
            if param.dim() == 2:
                name = f"{module_name}.{attr}" if module_name else attr
                owners.setdefault(param.untyped_storage().data_ptr(), []).append(
                    (module, attr, name)
                )
    wanted: dict[int, set[QuantSpec | None]] = {}
    for name, slot in slots.items():
        key = slot.untyped_storage().data_ptr() if isinstance(slot, torch.Tensor) else None
        if key in owners:
            wanted.setdefault(key, set()).add(specs.get(name))
    for key, chosen in wanted.items():
        layouts = {layout for layout in chosen if layout is not None}
        if len(layouts) < len(chosen):  # some of its tensors stay float: so does the matrix
            continue
        spec = layouts.pop() if len(layouts) == 1 else QuantSpec(8)
        module, attr, name = owners[key][0]
        param = getattr(module, attr)
        out_features, in_features = param.shape
        weight = QuantizedWeight(
            out_features, in_features, spec, device=param.device, dtype=param.dtype, name=name
        )
        for module, attr, _ in owners[key]:
            del module._parameters[attr]
            setattr(module, attr, weight)


def quant_specs(
    entries: Iterable[tuple[str, torch.Tensor | QuantizedTensor]],
    mode: QuantMode | None,
    spec: QuantSpec | None,
    *,
    keep_group: bool = False,
) -> dict[str, QuantSpec]:
    """Which checkpoint tensors to hold quantized, and how, for a `quant` setting.

    None keeps the checkpoint as it is (its quantized tensors stay quantized, floats stay
    float); `none`/`bf16` hold everything in float; `int8`/`int4` quantize every matrix,
    embedding and LM head included, and repack quantized tensors of another layout; `int4`
    without a group size picks one per matrix (`BULK_GROUP_SIZE`). With `keep_group` (`int4`
    named without a group size), stored int4 tensors keep theirs: a GGUF's Q4 blocks stay
    group 32 rather than being requantized.
    """
    tensors = list(entries)
    if mode is None:
        return {n: t.spec for n, t in tensors if isinstance(t, QuantizedTensor)}
    if spec is None:
        return {}
    matrices = [(name, tensor.shape[1]) for name, tensor in tensors if len(tensor.shape) == 2]
    if spec.bits == 4 and spec.group_size is None:
        layers = [int(m.group(1)) for name, _ in matrices if (m := _LAYER.search(name))]
        last = max(layers, default=0)
        specs = {name: _mixed_int4(name, width, last) for name, width in matrices}
        # A layer's experts share one layout (`quantize_experts`): the finest any of them takes.
        finest: dict[str, QuantSpec] = {}
        for name, chosen in specs.items():
            layer, expert, _ = name.partition(".experts.")
            if expert and (layer not in finest or chosen.group_size == SENSITIVE_GROUP_SIZE):
                finest[layer] = chosen
        for name in specs:
            layer, expert, _ = name.partition(".experts.")
            if expert:
                specs[name] = finest[layer]
    else:
        specs = {name: spec for name, _ in matrices}
    if keep_group:
        for name, tensor in tensors:
            if isinstance(tensor, QuantizedTensor) and tensor.spec.bits == spec.bits:
                specs[name] = tensor.spec
    return specs


_LAYER = re.compile(r"\blayers\.(\d+)\.")
_SENSITIVE = re.compile(r"(embed_tokens|lm_head|[qkv]_proj|down_proj)\.weight$")


def _mixed_int4(name: str, in_features: int, last_layer: int) -> QuantSpec:
    """The `int4` mix's layout for checkpoint tensor `name` (see `BULK_GROUP_SIZE`)."""
    layer = _LAYER.search(name)
    sensitive = ".experts." not in name and (
        _SENSITIVE.search(name) is not None
        or layer is None
        or int(layer.group(1)) in (0, last_layer)
    )
    if sensitive or in_features % BULK_GROUP_SIZE:
        return QuantSpec(4, SENSITIVE_GROUP_SIZE)
    return QuantSpec(4, BULK_GROUP_SIZE)


def prepare_model(model: nn.Module) -> None:
    """`prepare()` every `QuantizedWeight` of a loaded model for its device's kernels."""
    for module in model.modules():
        if isinstance(module, QuantizedWeight):
            module.prepare()


def describe_quant(model: nn.Module) -> str:
    """How a model's matrices are held: `none` (float: its dtype says which), or their layouts
    (`int8`, `int4-g64`; `int4-g32+int8` for a GGUF import whose embedding stayed int8)."""
    layouts = sorted({str(m.spec) for m in model.modules() if isinstance(m, QuantizedWeight)})
    return "+".join(layouts) or "none"
