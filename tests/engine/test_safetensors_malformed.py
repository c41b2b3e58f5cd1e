"""Malformed safetensors files: each raises SafetensorsError, never anything else, never a hang.

Hypothesis mutates a valid file (truncations, appended bytes, header length, header bytes, header
JSON) and compares with the official reader: whatever it accepts we read identically; whatever it
rejects we reject with a SafetensorsError. The one deliberate difference: we also reject
duplicate keys, which the official reader silently lets the last one win.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import safetensors
import safetensors.torch
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cortex.engine.safetensors import MAX_HEADER_BYTES, SafetensorsError, load_file, safe_open

TENSORS = {
    "a": torch.arange(6, dtype=torch.float32).reshape(2, 3),
    "b": torch.tensor([1, -2, 3], dtype=torch.int16),
    "c": torch.tensor(True),
    "d": torch.zeros(0, 4, dtype=torch.bfloat16),
}
HYPOTHESIS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _valid() -> bytes:
    return safetensors.torch.save(TENSORS, metadata={"format": "pt"})


def _file(header: Any, data: bytes, *, raw: bytes | None = None, pad: bool = True) -> bytes:
    body = raw if raw is not None else json.dumps(header, ensure_ascii=False).encode("utf-8")
    if pad:
        body += b" " * (-len(body) % 8)
    return len(body).to_bytes(8, "little") + body + data


def _split(blob: bytes) -> tuple[dict[str, Any], bytes]:
    n = int.from_bytes(blob[:8], "little")
    return json.loads(blob[8 : 8 + n]), blob[8 + n :]


def _official(blob: bytes) -> dict[str, tuple[str, list[int], bytes]] | None:
    """The official reader's verdict on the format alone (no torch dtype conversion)."""
    try:
        return {
            n: (t["dtype"], t["shape"], bytes(t["data"])) for n, t in safetensors.deserialize(blob)
        }
    except Exception:  # the official reader's SafetensorError
        return None


def _check(path: Path, blob: bytes) -> None:
    """Ours agrees with the official reader, and fails only with SafetensorsError."""
    path.write_bytes(blob)
    theirs = _official(blob)
    try:
        with safe_open(path) as f:
            ours = {}
            for name in f:
                info = f.info(name)
                raw = b""
                if info.torch_dtype is not None:  # F4/F6 have no torch type: header only
                    raw = f.get_tensor(name).reshape(-1).view(torch.uint8).numpy().tobytes()
                ours[name] = (info.dtype, list(info.shape), raw)
    except SafetensorsError as exc:
        assert str(path) in str(exc)
        assert theirs is None or "duplicate key" in exc.fault, f"official accepted: {exc}"
        return
    assert theirs is not None, "we accepted a file the official reader rejects"
    assert ours.keys() == theirs.keys()
    for name, (dtype, shape, raw) in ours.items():
        assert (dtype, shape) == theirs[name][:2]
        assert raw in (b"", theirs[name][2]) and (
            raw or not theirs[name][2] or dtype[:2] in ("F4", "F6")
        )


@pytest.fixture
def target(tmp_path: Path) -> Path:
    return tmp_path / "fuzz.safetensors"


@HYPOTHESIS
@given(cut=st.integers(min_value=0, max_value=len(_valid()) - 1))
def test_truncations(target: Path, cut: int) -> None:
    blob = _valid()[:cut]
    target.write_bytes(blob)
    with pytest.raises(SafetensorsError):
        load_file(target)


@HYPOTHESIS
@given(extra=st.binary(min_size=1, max_size=64))
def test_trailing_bytes(target: Path, extra: bytes) -> None:
    target.write_bytes(_valid() + extra)
    with pytest.raises(SafetensorsError, match="holds"):
        load_file(target)


@HYPOTHESIS
@given(length=st.integers(min_value=0, max_value=2**64 - 1))
def test_header_length_field(target: Path, length: int) -> None:
    _check(target, length.to_bytes(8, "little") + _valid()[8:])


@HYPOTHESIS
@given(data=st.data())
def test_header_byte_mutations(target: Path, data: st.DataObject) -> None:
    blob = bytearray(_valid())
    n = int.from_bytes(blob[:8], "little")
    for _ in range(data.draw(st.integers(1, 4))):
        blob[data.draw(st.integers(8, 8 + n - 1))] = data.draw(st.integers(0, 255))
    _check(target, bytes(blob))


_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)
_DTYPE_NAMES = st.sampled_from(
    ["F32", "F16", "BF16", "I8", "U8", "BOOL", "F64", "I64", "F4", "F6_E2M3", "F8_E8M0", "f32", "X"]
)


@HYPOTHESIS
@given(data=st.data())
def test_header_json_mutations(target: Path, data: st.DataObject) -> None:
    header, payload = _split(_valid())
    name = data.draw(st.sampled_from(sorted(TENSORS)))
    entry = header[name]
    field = data.draw(
        st.sampled_from(["offsets", "shape", "dtype", "drop", "extra", "entry", "metadata", "data"])
    )
    if field == "offsets":
        entry["data_offsets"] = data.draw(
            st.lists(st.integers(-3, 2**64 + 3), min_size=0, max_size=3)
            | st.tuples(st.integers(0, 40), st.integers(0, 40)).map(list)
        )
    elif field == "shape":
        entry["shape"] = data.draw(st.lists(st.integers(-2, 2**64), max_size=4) | _JSON_VALUES)
    elif field == "dtype":
        entry["dtype"] = data.draw(_DTYPE_NAMES | _JSON_VALUES)
    elif field == "drop":
        del entry[data.draw(st.sampled_from(sorted(entry)))]
    elif field == "extra":
        header[data.draw(st.text(max_size=5))] = data.draw(_JSON_VALUES)
    elif field == "entry":
        header[name] = data.draw(_JSON_VALUES)
    elif field == "metadata":
        header["__metadata__"] = data.draw(_JSON_VALUES)
    else:
        payload = payload[: data.draw(st.integers(0, len(payload)))] + data.draw(
            st.binary(max_size=9)
        )
    _check(target, _file(header, payload, pad=data.draw(st.booleans())))


@HYPOTHESIS
@given(header=_JSON_VALUES, payload=st.binary(max_size=32))
def test_arbitrary_json_headers(target: Path, header: Any, payload: bytes) -> None:
    _check(target, _file(header, payload))


def _entry(dtype: str, shape: list[int], begin: int, end: int) -> dict[str, Any]:
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


CASES: dict[str, tuple[bytes, str]] = {
    "empty file": (b"", "too short"),
    "seven bytes": (b"\x02\x00\x00\x00\x00\x00\x00", "too short"),
    "huge header length": ((MAX_HEADER_BYTES + 1).to_bytes(8, "little") + b"{}", "over"),
    "max u64 header length": (b"\xff" * 8 + b"{}", "over"),
    "header past the end": ((64).to_bytes(8, "little") + b"{}", "past the end"),
    "not utf-8": (_file(None, b"", raw=b'{"\xff\xfe": 1}'), "UTF-8"),
    "not json": (_file(None, b"", raw=b"{nope"), "not valid JSON"),
    "a list": (_file([], b""), "not a JSON object"),
    "unknown dtype": (_file({"x": _entry("F33", [1], 0, 4)}, b"\0" * 4), "unknown dtype"),
    "negative dim": (_file({"x": _entry("U8", [-1], 0, 1)}, b"\0"), "shape"),
    "bool dim": (_file({"x": _entry("U8", [True], 0, 1)}, b"\0"), "shape"),
    "float offset": (
        _file({"x": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1.0]}}, b"\0"),
        "data_offsets",
    ),
    "three offsets": (
        _file({"x": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1, 2]}}, b"\0"),
        "data_offsets",
    ),
    "missing dtype": (_file({"x": {"shape": [1], "data_offsets": [0, 1]}}, b"\0"), "dtype"),
    "gap": (_file({"x": _entry("U8", [1], 0, 1), "y": _entry("U8", [1], 2, 3)}, b"\0" * 3), "gap"),
    "overlap": (
        _file({"x": _entry("U8", [2], 0, 2), "y": _entry("U8", [2], 1, 3)}, b"\0" * 3),
        "overlap",
    ),
    "not from zero": (_file({"x": _entry("U8", [1], 1, 2)}, b"\0" * 2), "gap"),
    "end before begin": (_file({"x": _entry("U8", [0], 1, 0)}, b"\0"), "ends before"),
    "wrong byte span": (_file({"x": _entry("F32", [2], 0, 4)}, b"\0" * 4), "needs 8 bytes"),
    "overflowing shape": (
        _file({"x": _entry("F64", [2**40, 2**40], 0, 8)}, b"\0" * 8),
        "overflows",
    ),
    "sub-byte end": (_file({"x": _entry("F4", [3], 0, 1)}, b"\0"), "byte boundary"),
    "trailing data": (_file({"x": _entry("U8", [1], 0, 1)}, b"\0\0"), "holds 2"),
    "short data": (_file({"x": _entry("U8", [4], 0, 4)}, b"\0\0"), "holds 2"),
    "metadata int": (_file({"__metadata__": {"k": 1}}, b""), "__metadata__"),
    "metadata list": (_file({"__metadata__": ["k"]}, b""), "__metadata__"),
    "metadata false": (_file({"__metadata__": False}, b""), "__metadata__"),
    "duplicate tensor": (
        _file(
            None,
            b"\0",
            raw=b'{"x":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},'
            b'"x":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}',
        ),
        "duplicate key 'x'",
    ),
    "duplicate field": (
        _file(
            None, b"\0", raw=b'{"x":{"dtype":"U8","dtype":"I8","shape":[1],"data_offsets":[0,1]}}'
        ),
        "duplicate key 'dtype'",
    ),
    "duplicate metadata": (
        _file(None, b"", raw=b'{"__metadata__":{"k":"a","k":"b"}}'),
        "duplicate",
    ),
    "deep nesting": (_file(None, b"", raw=b"[" * 100_000 + b"]" * 100_000), "not valid JSON"),
    "giant integer": (
        _file(
            None,
            b"",
            raw=b'{"x":{"dtype":"U8","shape":[' + b"9" * 5000 + b'],"data_offsets":[0,1]}}',
        ),
        "not valid JSON",
    ),
    "lone surrogate name": (
        _file(None, b"\0", raw=b'{"\\ud800":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}'),
        "UTF-8",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_named_malformed_files(tmp_path: Path, case: str) -> None:
    blob, expect = CASES[case]
    path = tmp_path / "bad.safetensors"
    path.write_bytes(blob)
    with pytest.raises(SafetensorsError, match=expect) as info:
        load_file(path)
    assert info.value.path == str(path)
    duplicate_or_surrogate = "duplicate" in case or "surrogate" in case
    assert _official(blob) is None or duplicate_or_surrogate  # the official reader agrees
