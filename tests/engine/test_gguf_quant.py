"""GGUF tensors kept quantized: each llama.cpp type against gguf-py's dequantization."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as Q

from cortex.cli import main as cli_main
from cortex.engine import load_model
from cortex.engine.gguf import GGUFError, import_gguf
from cortex.engine.gguf_quant import gguf_quantized
from cortex.engine.quant import QuantizedWeight, QuantSpec

from .test_gguf_synthetic import write_gguf

ROWS, COLS = 8, 512
# Byte offsets of the float16 fields of one block, set to small finite values in random blocks.
HALF_FIELDS = {
    Q.Q4_0: (0,),
    Q.Q4_1: (0, 2),
    Q.Q4_K: (0, 2),
    Q.Q8_0: (0,),
    Q.Q5_K: (0, 2),
    Q.Q6_K: (208,),
}


def _random_blocks(qtype: Q, rng: np.random.Generator) -> np.ndarray[Any, Any]:
    block_elems, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
    blocks = rng.integers(0, 256, size=(ROWS, COLS // block_elems, block_bytes), dtype=np.uint8)
    for offset in HALF_FIELDS[qtype]:
        half = rng.uniform(-0.05, 0.05, size=blocks.shape[:2]).astype(np.float16)
        blocks[:, :, offset : offset + 2] = half.view(np.uint8).reshape(*blocks.shape[:2], 2)
    return blocks.reshape(ROWS, -1)


@pytest.fixture(scope="module")
def tensors(tmp_path_factory: pytest.TempPathFactory) -> dict[Q, Any]:
    """One random (ROWS, COLS) tensor of each type, read back through gguf-py's reader."""
    path = tmp_path_factory.mktemp("gguf-quant") / "blocks.gguf"
    writer = gguf.GGUFWriter(path, "llama")
    rng = np.random.default_rng(0)
    for qtype in HALF_FIELDS:
        writer.add_tensor(qtype.name, _random_blocks(qtype, rng), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    reader = gguf.GGUFReader(path)
    return {Q[t.name]: t for t in reader.tensors}


def _reference(tensor: Any) -> torch.Tensor:
    values = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
    return torch.from_numpy(values.astype(np.float32).reshape(ROWS, COLS))


@pytest.mark.parametrize("qtype", [Q.Q4_0, Q.Q4_1, Q.Q4_K])
def test_q4_types_are_repacked_into_int4_without_requantizing(
    tensors: dict[Q, Any], qtype: Q
) -> None:
    quantized = gguf_quantized(tensors[qtype], (ROWS, COLS), bits=4)
    assert quantized.spec == QuantSpec(4, 32)
    expected = _reference(tensors[qtype])
    if qtype == Q.Q4_K:  # sub-block scale products rounded to float16: 2^-11 of each
        tolerance = 2**-10 * expected.abs().max().item()
        torch.testing.assert_close(quantized.dequantize(), expected, rtol=0, atol=tolerance)
    else:
        assert torch.equal(quantized.dequantize(), expected)


@pytest.mark.parametrize("qtype", [Q.Q8_0, Q.Q5_K, Q.Q6_K])
@pytest.mark.parametrize("bits", [4, 8])
def test_finer_types_become_int8_per_channel(tensors: dict[Q, Any], qtype: Q, bits: int) -> None:
    quantized = gguf_quantized(tensors[qtype], (ROWS, COLS), bits=bits)
    assert quantized.spec == QuantSpec(8)  # an int4 target keeps 5 bits and more in int8
    expected = _reference(tensors[qtype])
    step = quantized.pieces[1][:, None]  # per-row scale: the error is half a step at most
    assert ((quantized.dequantize() - expected).abs() <= step / 2 + 1e-6).all()


def test_an_int8_target_requantizes_q4_per_channel(tensors: dict[Q, Any]) -> None:
    quantized = gguf_quantized(tensors[Q.Q4_1], (ROWS, COLS), bits=8)
    assert quantized.spec == QuantSpec(8)
    step = quantized.pieces[1][:, None]
    assert ((quantized.dequantize() - _reference(tensors[Q.Q4_1])).abs() <= step / 2 + 1e-6).all()


def test_quantized_import_loads_as_stored_and_matches_the_float_import(tmp_path: Path) -> None:
    source = tmp_path / "tiny.gguf"
    write_gguf(source, types=[Q.Q4_1, Q.Q4_0, Q.Q4_K, Q.Q8_0, Q.Q6_K])
    float_dir = import_gguf(source, tmp_path / "float", progress=False)
    int4_dir = tmp_path / "int4"
    assert cli_main(["import", str(source), "--out", str(int4_dir), "--quant", "int4"]) == 0
    reference, model = load_model(float_dir), load_model(int4_dir)  # as stored
    specs = {str(m.spec) for m in model.modules() if isinstance(m, QuantizedWeight)}
    assert specs == {"int4-g32", "int8"}  # the Q4 matrices int4, the finer ones int8
    # Every matrix (Q/K rows unpermuted like the float import's) holds the float import's
    # values: int4 ones to float16 scale rounding, int8 ones to half a step of their row.
    float_weights = dict(reference.named_parameters())
    for name, weight in model.named_modules():
        if isinstance(weight, QuantizedWeight) and name in float_weights:
            error = (weight.dequantize() - float_weights[name]).abs().max().item()
            bound = 0.02 if weight.spec.bits == 8 else 4e-3  # a 4-bit step is ~0.1
            assert error < bound * float_weights[name].abs().max().item(), name
    ids = list(range(3, 40))
    logits, expected = model(ids), reference(ids)  # bfloat16 activations in the CPU kernels
    assert (logits - expected).abs().max() < 0.15 * expected.abs().max()
    with pytest.raises(GGUFError, match="quant: 'int3' is not one of"):
        import_gguf(source, tmp_path / "bad", progress=False, quant="int3")
