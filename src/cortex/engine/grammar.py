"""Structured output: grammars (JSON Schema, JSON object), their matchers, token masks.

The grammar engine is llguidance (a Rust library with a small wheel and no Python
dependencies). It was chosen over xgrammar and outlines-core by measurement on SmolLM2's
49152-token vocabulary (`docs/structured-output.md`): xgrammar computes a mask faster (about
3 us against 15 us per token, both far under a decode step) but imports transformers at
import time and depends on it; outlines-core builds a regex index per schema (about 90 ms)
and fills masks at about 1 ms per token.

A request's grammar is checked when it is built (`json_schema_grammar` raises
`InvalidRequestError` naming the unsupported keyword); each engine's `GrammarCompiler`
compiles it once per distinct grammar against the model's tokenizer and hands every request
a copy of the compiled matcher. The grammars of replies that call tools are built in
`cortex.engine.tool_call_grammar`, one per tool-call format. The runner asks each
constrained row's matcher for its mask before sampling, and feeds it the sampled token after.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import llguidance

from cortex.errors import InvalidRequestError

__all__ = [
    "Grammar",
    "GrammarCompiler",
    "GrammarMatcher",
    "check_grammar",
    "json_object_grammar",
    "json_schema_grammar",
    "with_json_options",
]

# One way of writing JSON: a small model given free whitespace can pad forever.
_JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


@dataclass(frozen=True)
class Grammar:
    """What a request's output must match: an llguidance grammar (serialised) and its origin.

    Attributes:
        text: the llguidance grammar, as its JSON text.
        kind: `json_object`, `json_schema` or `tool_calls` (for logs and errors).
    """

    text: str
    kind: str


def _one_line(message: str) -> str:
    """A multi-line llguidance message (a regex error with a caret line...) on one line."""
    return " ".join(line.strip() for line in message.splitlines() if line.strip().strip("^"))


def check_grammar(grammar: str, param: str) -> None:
    """Raise a 400 naming what llguidance could not compile (an unsupported keyword...)."""
    failed, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar)
    if failed:  # warnings alone (keywords a lenient schema left out) are not errors
        detail = "; ".join(_one_line(m) for m in messages if m.strip())
        raise InvalidRequestError(
            f"{param}: the schema cannot be enforced: {detail or 'invalid grammar'}", param=param
        )


def with_json_options(schema: Mapping[str, Any], *, lenient: bool) -> dict[str, Any]:
    """`schema` with cortex's JSON layout options for llguidance (and its leniency)."""
    options = {**_JSON_OPTIONS, "lenient": lenient}
    return {**schema, "x-guidance": options}


def json_schema_grammar(
    schema: Mapping[str, Any], *, strict: bool, param: str = "response_format"
) -> Grammar:
    """The grammar of JSON values matching `schema`.

    Strict schemas are enforced in full, and a keyword the engine does not implement is an
    error. Non-strict ones are enforced as far as the engine understands them: keywords it
    does not implement (`if`/`then`, `$dynamicRef`...) are left out of the constraint.

    Raises:
        InvalidRequestError: the schema is not an object, or cannot be compiled (the message
            names the keyword).
    """
    if not isinstance(schema, Mapping):
        raise InvalidRequestError(f"{param}: the schema must be a JSON object", param=param)
    try:
        text = llguidance.LLMatcher.grammar_from_json_schema(
            json.dumps(with_json_options(schema, lenient=not strict))
        )
    except (ValueError, TypeError) as error:
        raise InvalidRequestError(f"{param}: invalid schema: {error}", param=param) from None
    check_grammar(text, param)
    return Grammar(text, "json_schema")


def json_object_grammar() -> Grammar:
    """The grammar of any JSON object (`response_format: {"type": "json_object"}`)."""
    return json_schema_grammar({"type": "object"}, strict=True)


class GrammarMatcher:
    """One request's place in its grammar: which tokens may come next, and the tokens so far."""

    def __init__(self, matcher: llguidance.LLMatcher) -> None:
        self._matcher = matcher

    def fill_mask(self, words: Any) -> None:
        """Write the allowed-token bitmask into `words` (a contiguous int32 CPU tensor row)."""
        self._matcher.unsafe_compute_mask_ptr(words.data_ptr(), words.numel() * 4)

    def accept(self, token_id: int) -> bool:
        """Advance past a sampled token; False when the grammar rejects it (then stopped)."""
        return bool(self._matcher.consume_token(token_id))

    @property
    def is_stopped(self) -> bool:
        """The grammar is complete (only an end-of-turn token may follow) or failed."""
        return bool(self._matcher.is_stopped())


class GrammarCompiler:
    """Compiles grammars against one model's tokenizer, once per distinct grammar.

    The llguidance tokenizer is built on first use (about half a second for a 50k vocabulary).
    Compiled matchers are kept in a bounded LRU; each request gets a copy.

    Args:
        tokenizer_json: the model's `tokenizer.json`, as text.
        vocab_size: the width of the model's logits (may exceed the tokenizer's vocabulary).
        eos_token_ids: the tokens that end a reply; allowed once the grammar is complete.
        cache_size: how many compiled grammars to keep.
    """

    def __init__(
        self,
        tokenizer_json: str,
        vocab_size: int,
        eos_token_ids: Collection[int],
        *,
        cache_size: int = 64,
    ) -> None:
        self.vocab_size = vocab_size
        self._tokenizer_json = tokenizer_json
        self._eos = sorted(eos_token_ids)
        self._tokenizer: llguidance.LLTokenizer | None = None
        self._cache: OrderedDict[str, llguidance.LLMatcher] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()  # requests are submitted from several event loops
        self.compiled = 0  # grammars compiled (cache misses), for tests and metrics

    @property
    def mask_words(self) -> int:
        """32-bit words per bitmask row."""
        return (self.vocab_size + 31) // 32

    def matcher(self, grammar: Grammar) -> GrammarMatcher:
        """A fresh matcher for `grammar` (compiled now unless cached)."""
        with self._lock:
            compiled = self._cache.get(grammar.text)
            if compiled is None:
                compiled = llguidance.LLMatcher(self._llg_tokenizer(), grammar.text)
                if compiled.is_error():
                    raise InvalidRequestError(
                        f"the {grammar.kind} grammar cannot be compiled: {compiled.get_error()}"
                    )
                self.compiled += 1
                self._cache[grammar.text] = compiled
                if len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
            else:
                self._cache.move_to_end(grammar.text)
            return GrammarMatcher(compiled.deep_copy())

    def _llg_tokenizer(self) -> llguidance.LLTokenizer:
        if self._tokenizer is None:
            self._tokenizer = llguidance.LLTokenizer(
                self._tokenizer_json, n_vocab=self.vocab_size, eos_token=self._eos
            )
        return self._tokenizer
