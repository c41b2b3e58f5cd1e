"""Damaged GGUF files: the import fails with `GGUFError` (or succeeds), never anything else; the
neuron's header reader fails with `ValueError`, and its model scan skips the file.

Hypothesis damages a tiny valid GGUF (a two-layer llama with a byte-level tokenizer): flipped
bytes in the header, the metadata and the tensor infos, and counts or lengths overwritten with
absurd 64-bit values. Truncations are covered in tests/engine/test_gguf*.py.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import gguf
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cortex.engine.gguf import GGUFError, import_gguf
from cortex.neuron.catalogue import ModelCatalogue, read_gguf_header

EXAMPLES = int(os.environ.get("CORTEX_HYPOTHESIS_EXAMPLES", "60"))
BUDGET = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
HIDDEN, HEADS, KV_HEADS, FFN = 32, 2, 1, 64


def _byte_tokens() -> list[str]:
    """GPT-2's printable stand-ins for the 256 bytes (its `bytes_to_unicode`)."""
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    others = [b for b in range(256) if b not in printable]
    chars = printable + [256 + i for i in range(len(others))]
    return [chr(c) for c in chars]


def _write(path: Path) -> None:
    vocab = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", *_byte_tokens(), "Ġt", "he"]
    rng = np.random.default_rng(0)
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_block_count(1)
    writer.add_context_length(128)
    writer.add_embedding_length(HIDDEN)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_rope_dimension_count(HIDDEN // HEADS)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_vocab_size(len(vocab))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("smollm")
    writer.add_token_list(vocab)
    writer.add_token_types([3, 3, 3] + [1] * (len(vocab) - 3))
    writer.add_token_merges(["Ġ t", "h e"])
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_chat_template("{% for m in messages %}{{ m['content'] }}{% endfor %}")

    def add(name: str, *shape: int) -> None:
        values = (rng.standard_normal(shape) * 0.1).astype(np.float32)
        if len(shape) == 2 and shape[1] % 32 == 0:
            writer.add_tensor(
                name,
                gguf.quants.quantize(values, gguf.GGMLQuantizationType.Q8_0),
                raw_dtype=gguf.GGMLQuantizationType.Q8_0,
            )
        else:
            writer.add_tensor(name, values)

    add("token_embd.weight", len(vocab), HIDDEN)
    add("output_norm.weight", HIDDEN)
    head = HIDDEN // HEADS
    for name, shape in {
        "attn_q": (HIDDEN, HIDDEN),
        "attn_k": (KV_HEADS * head, HIDDEN),
        "attn_v": (KV_HEADS * head, HIDDEN),
        "attn_output": (HIDDEN, HIDDEN),
        "ffn_gate": (FFN, HIDDEN),
        "ffn_up": (FFN, HIDDEN),
        "ffn_down": (HIDDEN, FFN),
        "attn_norm": (HIDDEN,),
        "ffn_norm": (HIDDEN,),
    }.items():
        add(f"blk.0.{name}.weight", *shape)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.fixture(scope="module")
def valid(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, int]:
    """The undamaged file (it imports), and where its tensor data begins: damage before that
    hits the parser rather than the weights."""
    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    _write(path)
    import_gguf(path, path.parent / "out", progress=False)
    return path.read_bytes(), int(gguf.GGUFReader(path).data_offset)


@pytest.fixture
def workdir() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="gguf-fuzz-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _damaged(valid: tuple[bytes, int], data: st.DataObject) -> bytes:
    blob, end = bytearray(valid[0]), valid[1]
    for _ in range(data.draw(st.integers(1, 4), label="damages")):
        at = data.draw(st.integers(0, end - 8), label="at")
        if data.draw(st.booleans(), label="whole 64-bit field"):
            value = data.draw(
                st.sampled_from([0, 1, 2**31, 2**32 - 1, 2**63 - 1, 2**64 - 1])
                | st.integers(0, 2**64 - 1),
                label="value",
            )
            blob[at : at + 8] = value.to_bytes(8, "little")
        else:
            blob[at] = data.draw(st.integers(0, 255), label="byte")
    return bytes(blob)


@BUDGET
@given(data=st.data())
def test_a_damaged_gguf_is_a_clear_import_error(
    valid: tuple[bytes, int], workdir: Path, data: st.DataObject
) -> None:
    source = Path(tempfile.mkdtemp(dir=workdir)) / "model.gguf"
    source.write_bytes(_damaged(valid, data))
    try:
        out = import_gguf(source, source.parent / "out", progress=False)
    except GGUFError as exc:
        assert str(source) in str(exc)
    else:
        assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()


@BUDGET
@given(data=st.data())
def test_a_damaged_gguf_header_is_a_value_error_and_the_scan_skips_it(
    valid: tuple[bytes, int], workdir: Path, data: st.DataObject
) -> None:
    folder = Path(tempfile.mkdtemp(dir=workdir))
    source = folder / "damaged.gguf"
    source.write_bytes(_damaged(valid, data))
    with contextlib.suppress(ValueError):
        read_gguf_header(source)
    specs = ModelCatalogue([folder], include_default=False).scan()  # never breaks the scan
    assert [spec.id for spec in specs] in ([], ["damaged"])


def test_a_count_past_the_end_is_refused_before_the_gguf_reader_sees_it(
    valid: tuple[bytes, int], workdir: Path
) -> None:
    """Found by the fuzzing: a damaged array count made the `gguf` package's reader allocate
    until the machine ran out of memory. The bounded header read refuses it first."""
    blob = bytearray(valid[0])
    key = b"tokenizer.ggml.tokens"
    count_at = blob.index(key) + len(key) + 4 + 4  # after the value type and the item type
    blob[count_at : count_at + 8] = (2**40).to_bytes(8, "little")
    source = workdir / "huge-count.gguf"
    source.write_bytes(bytes(blob))
    with pytest.raises(GGUFError, match="truncated GGUF header"):
        import_gguf(source, workdir / "out", progress=False)
    with pytest.raises(ValueError, match="truncated GGUF header"):
        read_gguf_header(source)
