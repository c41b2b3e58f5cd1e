"""GGUF quant labels: read from file names, matched loosely, ranked by bits per weight.

`gguf_quant("Qwen3-0.6B-Q4_K_M.gguf")` is `Q4_K_M`; `same_quant("q4km", "Q4_K_M")` holds (case,
underscores and hyphens do not matter); `nearest_quant` picks, among the quants a repo has, the
one closest in bits per weight to the one asked for.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from pathlib import Path

__all__ = ["DEFAULT_QUANT", "QUANT_BITS", "gguf_quant", "nearest_quant", "quant_bits", "same_quant"]

DEFAULT_QUANT = "Q4_K_M"
"""The quant pulled when a GGUF repo has several and none is named."""
QUANT_BITS = {  # rough bits per weight of each label: "nearest" is measured in them
    "IQ1_S": 1.6, "IQ1_M": 1.8, "IQ2_XXS": 2.1, "IQ2_XS": 2.3, "IQ2_S": 2.5, "IQ2_M": 2.7,
    "Q2_K_S": 2.9, "Q2_K": 3.0, "Q2_K_L": 3.2, "IQ3_XXS": 3.1, "IQ3_XS": 3.3, "IQ3_S": 3.4,
    "IQ3_M": 3.7, "Q3_K_S": 3.5, "Q3_K_M": 3.9, "Q3_K_L": 4.3, "Q3_K_XL": 4.4, "IQ4_XS": 4.3,
    "IQ4_NL": 4.5, "Q4_0": 4.5, "Q4_1": 5.0, "Q4_K_S": 4.6, "Q4_K_M": 4.9, "Q4_K_L": 5.1,
    "Q5_0": 5.5, "Q5_1": 6.0, "Q5_K_S": 5.5, "Q5_K_M": 5.7, "Q5_K_L": 5.9, "Q6_K": 6.6,
    "Q6_K_L": 6.8, "Q8_0": 8.5, "F16": 16.0, "BF16": 16.0, "F32": 32.0,
}  # fmt: skip
_QUANT_IN_NAME = re.compile(
    r"(?:^|[-_.])((?:I?Q\d(?:_[A-Z0-9]+)*)|BF16|F16|F32|FP16|FP32)(?=$|[-_.])", re.IGNORECASE
)
_SPLIT = re.compile(r"-(\d{5})-of-(\d{5})$")


def gguf_quant(file_name: str) -> str | None:
    """The quant label of a GGUF file name (`Qwen3-0.6B-Q4_K_M.gguf` -> `Q4_K_M`), or None."""
    stem = _SPLIT.sub("", Path(file_name).name.removesuffix(".gguf"))
    found = _QUANT_IN_NAME.findall(stem)
    return found[-1].upper() if found else None


def _canonical(quant: str) -> str:
    return re.sub(r"[^A-Z0-9]", "", quant.upper())


def same_quant(a: str, b: str) -> bool:
    """Whether two spellings name one quant (`q4-k-m`, `Q4_K_M`, `q4km`)."""
    return _canonical(a) == _canonical(b)


def quant_bits(quant: str) -> float | None:
    """Rough bits per weight of a quant (None for an unknown label)."""
    for name, bits in QUANT_BITS.items():
        if same_quant(name, quant):
            return bits
    return None


def nearest_quant(wanted: str, available: Sequence[str]) -> str | None:
    """The available quant closest in bits per weight (else in spelling) to `wanted`."""
    target = quant_bits(wanted)
    known = [(bits, q) for q in available if (bits := quant_bits(q)) is not None]
    if target is not None and known:
        return min(known, key=lambda item: (abs(item[0] - target), -item[0]))[1]
    close = difflib.get_close_matches(wanted.upper(), list(available), n=1, cutoff=0.0)
    return close[0] if close else None
