"""Our Tokenizer against transformers' tokenizer of the same GGUF: ids, decoding, streaming."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
import tokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers

from cortex.engine import Tokenizer
from cortex.engine.tokenizer import IncrementalDetokenizer
from cortex.errors import CortexError

CORPUS = [
    # ASCII prose and punctuation
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "I'm sure it's fine; isn't it? Yes -- it is.",
    "e.g. U.S.A. vs. Mr. Smith's 3rd-floor office (room #42).",
    "ALL CAPS SHOUTING AND lowercase whispering",
    "a",
    "",
    " ",
    "hello",
    " hello",
    "  hello  ",
    # numbers
    "1234567890",
    "3.14159 2.71828 -1e-10 +42 0x1F 0b1010",
    "Order 66 shipped on 2024-12-31 at 23:59:59 UTC.",
    "1,000,000 and 1 000 000 and 1_000_000",
    # whitespace runs
    "tabs\tand\t\ttabs",
    "line one\nline two\n\nline four",
    "\n\n\n\n",
    "trailing spaces     ",
    "     leading spaces",
    "mixed \t \n \r\n whitespace",
    "\r\n windows line endings \r\n",
    "spaces          in          between",
    # accents and other Latin scripts
    "café naïve résumé façade jalapeño",
    "Ünïcödé Ĉħàřåçţęřş",
    "Straße, Øresund, Łódź, Ærø",
    "déjà vu à la carte",
    # other scripts
    "中文测试：你好，世界！",
    "日本語のテキストとカタカナ、ひらがな。",
    "한국어 문장입니다.",
    "Привет, мир! Как дела?",
    "Γειά σου Κόσμε",
    "مرحبا بالعالم",
    "שלום עולם",
    "नमस्ते दुनिया",
    "สวัสดีชาวโลก",
    # emoji (multi-byte, ZWJ sequences, skin tones, flags)
    "🎉🎊🥳",
    "👍🏽 thumbs up with skin tone",
    "👨‍👩‍👧‍👦 family",
    "🇫🇷🇯🇵 flags",
    "mixed 😀 text 🚀 with ✨ emoji",
    # code
    "def f(x):\n    return x ** 2  # square\n",
    "for (int i = 0; i < n; ++i) { sum += a[i]; }",
    'const s = `template ${value}`; console.log("done");',
    "SELECT * FROM users WHERE id = 42 AND name LIKE '%bob%';",
    '{"key": [1, 2, 3], "nested": {"a": null, "b": true}}',
    '<div class="x">&amp; &lt;tag&gt;</div>',
    "#!/bin/bash\nset -euo pipefail\necho \"$HOME\" | grep -v '^#'",
    "fn main() -> Result<(), Box<dyn Error>> { Ok(()) }",
    "    indented\n        more indented\n\tand a tab",
    # special tokens written in text
    "<|im_start|>user\nHello<|im_end|>\n",
    "<|endoftext|>",
    "before<|im_end|>after",
    "<|im_start|>assistant\n",
    "<repo_name>cortex<file_sep>main.py",
    # odd bits
    "\u00a0non-breaking\u00a0space",
    "zero\u200bwidth\u200bspace",
    "math: ∑ ∫ √ ≤ ≥ ≠ ∞ π",
    "currency: € £ ¥ ₹ $ ¢",
    "https://example.com/path?query=1&b=two#frag",
    "user@example.com, +1 (555) 123-4567",
    "repeated!!!!!!!! ??????? ........",
    "a" * 300,
]


def test_corpus_is_large_and_varied() -> None:
    assert len(CORPUS) >= 50
    assert len(set(CORPUS)) == len(CORPUS)


@pytest.fixture(scope="module")
def tokenizer(default_model_dir: Path) -> Tokenizer:
    return Tokenizer.from_dir(default_model_dir)


@pytest.mark.parametrize("add_special_tokens", [False, True])
def test_ids_match_transformers(
    tokenizer: Tokenizer, hf_tokenizer: Any, add_special_tokens: bool
) -> None:
    for text in CORPUS:
        expected = hf_tokenizer.encode(text, add_special_tokens=add_special_tokens)
        assert tokenizer.encode(text, add_special_tokens=add_special_tokens) == expected, text


@pytest.mark.parametrize("skip_special_tokens", [False, True])
def test_decode_matches_transformers(
    tokenizer: Tokenizer, hf_tokenizer: Any, skip_special_tokens: bool
) -> None:
    for text in CORPUS:
        ids = tokenizer.encode(text)
        expected = hf_tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)
        assert tokenizer.decode(ids, skip_special_tokens=skip_special_tokens) == expected
        if not skip_special_tokens:
            assert tokenizer.decode(ids) == text  # byte-level BPE round-trips exactly


def test_special_tokens_and_vocab(tokenizer: Tokenizer, hf_tokenizer: Any) -> None:
    assert tokenizer.vocab_size == len(hf_tokenizer) == 49152
    assert tokenizer.eos_token_ids == {hf_tokenizer.eos_token_id}
    assert tokenizer.token_to_id("<|im_end|>") in tokenizer.eos_token_ids
    assert tokenizer.bos_token_id == hf_tokenizer.bos_token_id
    assert tokenizer.special_tokens["eos_token"] == hf_tokenizer.eos_token
    assert tokenizer.id_to_token(tokenizer.token_to_id("<|im_start|>") or -1) == "<|im_start|>"
    assert tokenizer.token_to_id("no-such-token-anywhere") is None


def _write_model_dir(tmp_path: Path, source: Path, config: dict[str, Any]) -> Path:
    (tmp_path / "tokenizer.json").write_bytes((source / "tokenizer.json").read_bytes())
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    return tmp_path


def test_from_dir_reads_every_template_layout(default_model_dir: Path, tmp_path: Path) -> None:
    named = [
        {"name": "default", "template": "D{{ messages[0]['content'] }}"},
        {"name": "tool_use", "template": "T{{ tools | length }}"},
    ]
    model_dir = _write_model_dir(tmp_path, default_model_dir, {"chat_template": named})
    (tmp_path / "config.json").write_text(json.dumps({"eos_token_id": [7, 8]}))
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": 9}))
    tokenizer = Tokenizer.from_dir(model_dir)
    messages = [{"role": "user", "content": "x"}]
    assert tokenizer.render_chat_template(messages) == "Dx"
    assert tokenizer.render_chat_template(messages, tools=[{"a": 1}, {"b": 2}]) == "T2"
    assert tokenizer.eos_token_ids == {7, 8, 9}

    # A chat_template.jinja file wins over tokenizer_config.json, as in transformers.
    (tmp_path / "chat_template.jinja").write_text("F{{ bos_token }}")
    config = {"chat_template": "ignored", "bos_token": {"content": "<|im_start|>"}}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    tokenizer = Tokenizer.from_dir(model_dir)
    assert tokenizer.render_chat_template(messages) == "F<|im_start|>"
    assert tokenizer.bos_token_id == 1


def test_missing_files_and_templates_are_reported(default_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(CortexError, match=r"tokenizer\.json"):
        Tokenizer.from_dir(tmp_path)
    tokenizer = Tokenizer.from_dir(_write_model_dir(tmp_path, default_model_dir, {}))
    with pytest.raises(CortexError, match="no chat template"):
        tokenizer.apply_chat_template([{"role": "user", "content": "hi"}])
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{% if %}"}))
    with pytest.raises(CortexError, match="chat template is invalid"):
        Tokenizer.from_dir(tmp_path).render_chat_template([{"role": "user", "content": "hi"}])


# -- streaming ---------------------------------------------------------------------------

REPLACEMENT = "\ufffd"


def _stream(
    tokenizer: Tokenizer, ids: list[int], *, skip_special_tokens: bool = False
) -> tuple[list[str], list[str], str]:
    """Deltas per token, the text emitted after each token, and the finish delta."""
    detok = tokenizer.detokenizer(skip_special_tokens=skip_special_tokens)
    deltas, emitted = [], []
    for token in ids:
        deltas.append(detok.feed(token))
        emitted.append(detok.text)
    return deltas, emitted, detok.finish()


def test_corpus_streams_to_its_decode(tokenizer: Tokenizer) -> None:
    for text in CORPUS:
        ids = tokenizer.encode(text)
        deltas, _, tail = _stream(tokenizer, ids)
        assert "".join(deltas) + tail == tokenizer.decode(ids) == text
        assert tail == ""
        assert not any(REPLACEMENT in delta for delta in deltas), (text, deltas)


def test_multibyte_characters_are_held_until_complete(tokenizer: Tokenizer) -> None:
    text = "🎉👍🏽 中文"
    ids = tokenizer.encode(text)
    assert len(ids) > len(text)  # some characters span several byte-level tokens
    deltas, emitted, _ = _stream(tokenizer, ids)
    assert "" in deltas  # a token that ends mid-character emits nothing...
    for k, shown in enumerate(emitted, start=1):
        # ...and everything before the incomplete character is out at once.
        assert shown == tokenizer.decode(ids[:k]).rstrip(REPLACEMENT)
        shown.encode("utf-8")  # always valid text


def test_ascii_is_emitted_token_by_token(tokenizer: Tokenizer) -> None:
    ids = tokenizer.encode("def main():\n    print('hi')  # done")
    deltas, _, _ = _stream(tokenizer, ids)
    assert deltas == [tokenizer.decode([token]) for token in ids]


@pytest.mark.parametrize("skip_special_tokens", [False, True])
def test_random_token_streams(tokenizer: Tokenizer, skip_special_tokens: bool) -> None:
    # Arbitrary ids, including special tokens and lone UTF-8 fragments that never complete.
    rng = random.Random(1234)
    for _ in range(40):
        ids = [rng.randrange(tokenizer.vocab_size) for _ in range(rng.randrange(1, 40))]
        ids += [rng.randrange(17) for _ in range(rng.randrange(0, 3))]  # special tokens
        rng.shuffle(ids)
        deltas, emitted, tail = _stream(tokenizer, ids, skip_special_tokens=skip_special_tokens)
        full = tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)
        assert "".join(deltas) + tail == full
        for k, shown in enumerate(emitted, start=1):
            prefix = tokenizer.decode(ids[:k], skip_special_tokens=skip_special_tokens)
            assert shown == prefix.rstrip(REPLACEMENT)  # final text, and all of it
            assert not deltas[k - 1].endswith(REPLACEMENT)


def test_end_of_turn_can_be_skipped(tokenizer: Tokenizer) -> None:
    ids = [*tokenizer.encode("Done."), next(iter(tokenizer.eos_token_ids))]
    assert "".join(_stream(tokenizer, ids)[0]) == "Done.<|im_end|>"
    assert "".join(_stream(tokenizer, ids, skip_special_tokens=True)[0]) == "Done."


def test_incomplete_character_is_released_by_finish(tokenizer: Tokenizer) -> None:
    ids = tokenizer.encode("ok 🎉")
    detok = IncrementalDetokenizer(tokenizer)
    deltas = [detok.feed(token) for token in ids[:-1]]
    assert "".join(deltas) == "ok "
    assert detok.finish() == REPLACEMENT  # the stream ended inside the emoji
    assert detok.text == "ok " + REPLACEMENT


def _sentencepiece_style() -> Tokenizer:
    """A tiny Metaspace BPE (Llama 2 / Mistral style), whose decoder drops the first space."""
    backend = tokenizers.Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="first")
    backend.decoder = decoders.Metaspace(prepend_scheme="first")
    sentences = ["hello world", "the world is big", "hello there", "big hello"] * 5
    trainer = trainers.BpeTrainer(vocab_size=60, special_tokens=["<unk>", "</s>"])
    backend.train_from_iterator(sentences, trainer)
    return Tokenizer(backend, eos_token_ids={1})


def test_prompt_context_keeps_the_leading_space() -> None:
    tokenizer = _sentencepiece_style()
    prompt = tokenizer.encode("the world")
    answer = tokenizer.encode("the world is big hello")[len(prompt) :]
    assert tokenizer.decode(answer) == "is big hello"  # alone, the space is dropped
    detok = tokenizer.detokenizer(prompt_ids=prompt)
    text = "".join(detok.feed(token) for token in answer) + detok.finish()
    assert text == " is big hello"  # in context, it is kept
    detok = tokenizer.detokenizer()
    assert "".join(detok.feed(token) for token in answer) == "is big hello"
