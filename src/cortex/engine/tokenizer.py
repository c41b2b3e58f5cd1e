"""`Tokenizer`: a model folder's tokenizer.json, special tokens and chat templates together."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import tokenizers

from cortex.engine.chat_template import ChatTemplate
from cortex.engine.detokenizer import IncrementalDetokenizer
from cortex.errors import CortexError

__all__ = ["MARKER_TOKENS", "IncrementalDetokenizer", "Tokenizer"]

# Special tokens kept in decoded text even when special tokens are skipped: they delimit a
# thought or a tool call, which the reply's parsers must see (Llama 3's `<|python_tag|>`,
# Mistral's `[TOOL_CALLS]`, a `<think>` marked special...).
MARKER_TOKENS = frozenset(
    {
        "<think>",
        "</think>",
        "[THINK]",
        "[/THINK]",
        "<|START_THINKING|>",
        "<|END_THINKING|>",
        "<tool_call>",
        "</tool_call>",
        "[TOOL_CALLS]",
        "[ARGS]",
        "<|python_tag|>",
    }
)

# The named special tokens Hugging Face passes to every chat template.
_SPECIAL_TOKEN_NAMES = (
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
)


class Tokenizer:
    """Encode, decode and render chats the way `transformers` does for the same directory.

    Build one with `Tokenizer.from_dir`.

    Args:
        backend: the `tokenizers.Tokenizer` (BPE model, pre-tokenizer, decoder, added tokens).
        special_tokens: named special tokens, e.g. `{"eos_token": "<|im_end|>"}`.
        chat_templates: templates by name; `default` is used unless tools pick `tool_use`.
        eos_token_ids: every token that ends a turn.
        bos_token_id: the beginning-of-sequence token, if the model has one.
    """

    def __init__(
        self,
        backend: tokenizers.Tokenizer,
        *,
        special_tokens: Mapping[str, str] | None = None,
        chat_templates: Mapping[str, str] | None = None,
        eos_token_ids: set[int] | None = None,
        bos_token_id: int | None = None,
    ) -> None:
        self.backend = backend
        self.special_tokens = dict(special_tokens or {})
        self.chat_templates = dict(chat_templates or {})
        self.eos_token_ids: set[int] = set(eos_token_ids or ())
        self.bos_token_id = bos_token_id
        self._compiled: dict[str, ChatTemplate] = {}
        special = {
            int(i): str(t.content)
            for i, t in backend.get_added_tokens_decoder().items()
            if t.special
        }
        self.marker_ids = frozenset(i for i, text in special.items() if text in MARKER_TOKENS)
        self._hidden_ids = frozenset(special) - self.marker_ids

    @classmethod
    def from_dir(cls, model_dir: str | Path) -> Tokenizer:
        """Load from a Hugging Face model directory.

        Reads `tokenizer.json`; `tokenizer_config.json` for special tokens and the chat
        template (or `chat_template.jinja` and `additional_chat_templates/*.jinja`, which
        take priority, as in `transformers`); `config.json` and `generation_config.json`
        for end-of-turn ids.

        Raises:
            CortexError: tokenizer.json is missing or unreadable.
        """
        model_dir = Path(model_dir)
        try:
            backend = tokenizers.Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        except Exception as exc:  # tokenizers raises its own Exception types
            raise CortexError(f"{model_dir}: cannot load tokenizer.json: {exc}") from exc
        tokenizer_config = _read_json(model_dir / "tokenizer_config.json")
        special_tokens = {
            name: token
            for name in _SPECIAL_TOKEN_NAMES
            if (token := _token_text(tokenizer_config.get(name))) is not None
        }
        templates = _chat_templates(model_dir, tokenizer_config)

        eos_ids: list[int] = []
        eos_token = special_tokens.get("eos_token")
        if eos_token is not None and (eos_id := backend.token_to_id(eos_token)) is not None:
            eos_ids.append(eos_id)
        model_config = _read_json(model_dir / "config.json")
        for source in (model_config, _read_json(model_dir / "generation_config.json")):
            eos_ids.extend(_ids(source.get("eos_token_id")))
        bos_token = special_tokens.get("bos_token")
        bos_id = backend.token_to_id(bos_token) if bos_token is not None else None
        if bos_id is None and isinstance(model_config.get("bos_token_id"), int):
            bos_id = model_config["bos_token_id"]
        return cls(
            backend,
            special_tokens=special_tokens,
            chat_templates=templates,
            eos_token_ids=set(eos_ids),
            bos_token_id=bos_id,
        )

    # -- text <-> ids -----------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        """Number of token ids the tokenizer knows, added tokens included."""
        return int(self.backend.get_vocab_size(with_added_tokens=True))

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """Token ids of `text`; special tokens written in the text become their ids.

        Args:
            text: the text.
            add_special_tokens: apply the post-processor (e.g. prepend BOS where the model does).
        """
        return list(self.backend.encode(text, add_special_tokens=add_special_tokens).ids)

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        """The text of `ids` (invalid or partial UTF-8 becomes U+FFFD).

        Args:
            ids: token ids.
            skip_special_tokens: leave special tokens out, except the markers of thoughts and
                tool calls (`MARKER_TOKENS`), which the reply's parsers read.
        """
        if skip_special_tokens and self.marker_ids:
            kept = [i for i in ids if i not in self._hidden_ids]
            return str(self.backend.decode(kept, skip_special_tokens=False))
        return str(self.backend.decode(list(ids), skip_special_tokens=skip_special_tokens))

    def token_to_id(self, token: str) -> int | None:
        """The id of one token string, or None."""
        found = self.backend.token_to_id(token)
        return None if found is None else int(found)

    def id_to_token(self, token_id: int) -> str | None:
        """The token string of one id, or None."""
        found = self.backend.id_to_token(token_id)
        return None if found is None else str(found)

    def detokenizer(
        self, *, prompt_ids: Sequence[int] = (), skip_special_tokens: bool = False
    ) -> IncrementalDetokenizer:
        """A fresh streaming decoder for one generation (see `IncrementalDetokenizer`)."""
        return IncrementalDetokenizer(
            self, prompt_ids=prompt_ids, skip_special_tokens=skip_special_tokens
        )

    # -- chat templates ---------------------------------------------------------------------

    @property
    def chat_template(self) -> str | None:
        """The default chat template's source, if the model has one."""
        return self.chat_templates.get("default")

    def render_chat_template(
        self,
        messages: Sequence[Mapping[str, Any]],
        add_generation_prompt: bool = True,
        tools: Sequence[Mapping[str, Any]] | None = None,
        *,
        continue_final_message: bool = False,
        **variables: Any,
    ) -> str:
        """The prompt text of a conversation, as `apply_chat_template(..., tokenize=False)` gives.

        Args:
            messages: `{"role", "content", ...}` dicts.
            add_generation_prompt: end with the header that opens the assistant's turn.
            tools: JSON schemas of the available tools.
            continue_final_message: leave the last message open for the model to continue.
            **variables: more template variables (`documents`, `enable_thinking`...).

        Raises:
            CortexError: the model has no chat template.
            InvalidRequestError: the template refuses the messages.
        """
        template = self._template(tools is not None)
        return template.render(
            messages,
            add_generation_prompt=add_generation_prompt,
            tools=tools,
            continue_final_message=continue_final_message,
            **variables,
        )

    def apply_chat_template(
        self,
        messages: Sequence[Mapping[str, Any]],
        add_generation_prompt: bool = True,
        tools: Sequence[Mapping[str, Any]] | None = None,
        *,
        continue_final_message: bool = False,
        **variables: Any,
    ) -> list[int]:
        """The prompt's token ids: the rendered template, encoded without added special tokens."""
        text = self.render_chat_template(
            messages,
            add_generation_prompt,
            tools,
            continue_final_message=continue_final_message,
            **variables,
        )
        return self.encode(text, add_special_tokens=False)

    def _template(self, with_tools: bool) -> ChatTemplate:
        name = "tool_use" if with_tools and "tool_use" in self.chat_templates else "default"
        if name not in self.chat_templates:
            if self.chat_templates:
                raise CortexError(
                    "the model has several chat templates and none is the default: "
                    + ", ".join(sorted(self.chat_templates))
                )
            raise CortexError("the model has no chat template; send token ids instead")
        compiled = self._compiled.get(name)
        if compiled is None:
            compiled = ChatTemplate(self.chat_templates[name], self.special_tokens)
            self._compiled[name] = compiled
        return compiled


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CortexError(f"{path}: unreadable: {exc}") from exc
    return data if isinstance(data, dict) else {}


def _token_text(value: object) -> str | None:
    """A special token from tokenizer_config.json: a string or a serialised `AddedToken`."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return str(value["content"])
    return None


def _ids(value: object) -> list[int]:
    if isinstance(value, int):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, int)]
    return []


def _chat_templates(model_dir: Path, tokenizer_config: dict[str, Any]) -> dict[str, str]:
    """Templates by name; template files win over tokenizer_config.json, as in `transformers`."""
    from_files: dict[str, str] = {}
    default_file = model_dir / "chat_template.jinja"
    if default_file.is_file():
        from_files["default"] = default_file.read_text(encoding="utf-8")
    extra_dir = model_dir / "additional_chat_templates"
    if extra_dir.is_dir():
        for path in sorted(extra_dir.glob("*.jinja")):
            from_files[path.name.removesuffix(".jinja")] = path.read_text(encoding="utf-8")
    if from_files:
        return from_files
    configured = tokenizer_config.get("chat_template")
    if isinstance(configured, str):
        return {"default": configured}
    if isinstance(configured, list):
        return {
            str(entry["name"]): str(entry["template"])
            for entry in configured
            if isinstance(entry, dict) and "name" in entry and "template" in entry
        }
    return {}
