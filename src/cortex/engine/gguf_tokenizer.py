"""The tokenizer files of a GGUF import: `tokenizer.json` and its config, from the GGUF vocabulary.

The tokenizer is built the way transformers builds one from a GGUF file
(`transformers.integrations.gguf.gguf_tokenizer_mapping`), so both give the same ids: a byte-level
BPE over the file's vocabulary and merges, the file's control tokens added as special tokens, and
a split regex chosen by `tokenizer.ggml.pre` (plain GPT-2 byte-level splitting when the file names
no regex we know; that includes SmolLM2's `smollm`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from typing import Any, Final

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors

__all__ = ["UnsupportedTokenizerError", "build_tokenizer_files"]

_CONTROL: Final = 3
_USER_DEFINED: Final = 4

_LLAMA3_SPLIT: Final = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT: Final = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# `tokenizer.ggml.pre` -> the split regex its merges were learned with (as transformers maps them).
_PRE_SPLITS: Final = {
    "llama3": _LLAMA3_SPLIT,
    "llama-v3": _LLAMA3_SPLIT,
    "llama-bpe": _LLAMA3_SPLIT,
    "falcon3": _LLAMA3_SPLIT,
    "smaug-bpe": _LLAMA3_SPLIT,
    "dbrx": _LLAMA3_SPLIT,
    "qwen2": _QWEN2_SPLIT,
    "deepseek-r1-qwen": _QWEN2_SPLIT,
    "megrez": _QWEN2_SPLIT,
}


class UnsupportedTokenizerError(ValueError):
    """The GGUF describes a tokenizer this importer cannot build (the caller names the file)."""


@cache
def _byte_alphabet() -> dict[int, str]:
    """GPT-2's printable spelling of each byte (`bytes_to_unicode`)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    spelling = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in spelling:
            spelling[b] = chr(256 + extra)
            extra += 1
    return spelling


def _token_name(meta: Mapping[str, Any], key: str) -> str | None:
    token_id = meta.get(f"tokenizer.ggml.{key}")
    tokens: list[str] = meta["tokenizer.ggml.tokens"]
    if isinstance(token_id, int) and 0 <= token_id < len(tokens):
        return tokens[token_id]
    return None


def _byte_level_bpe(meta: Mapping[str, Any]) -> Tokenizer:
    tokens: list[str] = meta["tokenizer.ggml.tokens"]
    spelling = _byte_alphabet()
    alphabet = set(spelling.values())
    vocab = {
        token if set(token) <= alphabet else "".join(spelling[b] for b in token.encode()): index
        for index, token in enumerate(tokens)
    }
    merges: list[tuple[str, str]] = []
    for merge in meta.get("tokenizer.ggml.merges", []):
        parts = merge.split(" ")
        if len(parts) != 2:
            raise UnsupportedTokenizerError(f"merge {merge!r} is not two tokens")
        merges.append((parts[0], parts[1]))
    try:
        bpe = models.BPE(
            vocab=vocab,
            merges=merges,
            dropout=None,
            continuing_subword_prefix="",
            end_of_word_suffix="",
            fuse_unk=False,
        )
    except Exception as exc:  # tokenizers raises a bare Exception, e.g. a merge of unknown tokens
        raise UnsupportedTokenizerError(f"the vocabulary and merges do not agree: {exc}") from None
    tokenizer = Tokenizer(bpe)
    split = _PRE_SPLITS.get(meta.get("tokenizer.ggml.pre", ""))
    if split is None:
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    else:
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(split), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    tokenizer.decoder = decoders.ByteLevel()
    token_types: list[int] = meta.get("tokenizer.ggml.token_type", [])
    # A control token spelled outside the byte alphabet is a llama.cpp mislabel: skip it, as
    # transformers does, rather than grow the vocabulary past the embedding.
    tokenizer.add_special_tokens(
        [
            AddedToken(token, normalized=False, special=True)
            for token, kind in zip(tokens, token_types, strict=False)
            if kind == _CONTROL and set(token) <= alphabet
        ]
    )
    tokenizer.add_tokens(
        [
            AddedToken(token, normalized=False, special=False)
            for token, kind in zip(tokens, token_types, strict=False)
            if kind == _USER_DEFINED and token in vocab
        ]
    )
    return tokenizer


def _post_processor(bos: str | None, eos: str | None, add_bos: bool, add_eos: bool) -> Any:
    """transformers' `update_post_processor` template: BOS/EOS around each sequence if asked."""
    add_bos, add_eos = add_bos and bos is not None, add_eos and eos is not None
    single = f"{f'{bos}:0 ' if add_bos else ''}$A:0{f' {eos}:0' if add_eos else ''}"
    pair = f"{single}{f' {bos}:1' if add_bos else ''} $B:1{f' {eos}:1' if add_eos else ''}"
    return single, pair


def build_tokenizer_files(
    meta: Mapping[str, Any], context_length: int | None
) -> dict[str, dict[str, Any]]:
    """The JSON files of the tokenizer a GGUF describes, by file name.

    Args:
        meta: the GGUF metadata (`tokenizer.ggml.*`, `tokenizer.chat_template`).
        context_length: the model's context, written as `model_max_length`.

    Returns:
        `tokenizer.json`, `tokenizer_config.json` and `special_tokens_map.json` contents.

    Raises:
        UnsupportedTokenizerError: not a byte-level BPE (`tokenizer.ggml.model` is not `gpt2`).
    """
    kind = meta.get("tokenizer.ggml.model")
    if "tokenizer.ggml.tokens" not in meta:
        raise UnsupportedTokenizerError("the file holds no tokenizer vocabulary")
    if kind != "gpt2":
        raise UnsupportedTokenizerError(
            f"tokenizer model {kind!r} is not supported yet (only byte-level BPE, 'gpt2')"
        )
    tokenizer = _byte_level_bpe(meta)
    special = {
        "bos_token": _token_name(meta, "bos_token_id"),
        "eos_token": _token_name(meta, "eos_token_id"),
        "unk_token": _token_name(meta, "unknown_token_id"),
        "pad_token": _token_name(meta, "padding_token_id"),
    }
    add_bos = bool(meta.get("tokenizer.ggml.add_bos_token", False))
    add_eos = bool(meta.get("tokenizer.ggml.add_eos_token", False))
    single, pair = _post_processor(special["bos_token"], special["eos_token"], add_bos, add_eos)
    pieces = []
    if add_bos and special["bos_token"] is not None:
        pieces.append((special["bos_token"], meta["tokenizer.ggml.bos_token_id"]))
    if add_eos and special["eos_token"] is not None:
        pieces.append((special["eos_token"], meta["tokenizer.ggml.eos_token_id"]))
    tokenizer.post_processor = processors.TemplateProcessing(
        single=single, pair=pair, special_tokens=pieces
    )
    config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "add_bos_token": add_bos,
        "add_eos_token": add_eos,
        "clean_up_tokenization_spaces": False,
        **{name: token for name, token in special.items() if token is not None},
    }
    if context_length is not None:
        config["model_max_length"] = context_length
    template = meta.get("tokenizer.chat_template")
    if isinstance(template, str):
        config["chat_template"] = template
    return {
        "tokenizer.json": json.loads(tokenizer.to_str()),
        "tokenizer_config.json": config,
        "special_tokens_map.json": {k: v for k, v in special.items() if v is not None},
    }
