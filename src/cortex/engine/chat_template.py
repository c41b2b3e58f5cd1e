"""Chat templates rendered with jinja2 in a sandbox, with Hugging Face's semantics.

The environment matches `transformers`' `apply_chat_template`: `trim_blocks` and
`lstrip_blocks`, loop controls, the `{% generation %}` tag, a `tojson` that keeps non-ASCII
and takes `indent`/`separators`/`sort_keys`, `raise_exception`, `strftime_now`, and the
special tokens (`bos_token`, `eos_token`...) as variables. Messages are plain data: keys whose
value is None are dropped, and a message's reasoning is offered under `reasoning_content`
and `thinking` whichever name it came under.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import jinja2
import jinja2.ext
import jinja2.nodes
import jinja2.parser
import jinja2.utils
from jinja2.sandbox import ImmutableSandboxedEnvironment

from cortex.errors import CortexError, InvalidRequestError

__all__ = ["ChatTemplate"]

_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")
_CONTINUE_TAG = "CONTINUE_FINAL_MESSAGE_TAG "


class _TemplateRaised(jinja2.TemplateError):
    """The template called `raise_exception(message)`: it refuses these messages."""


class _GenerationTag(jinja2.ext.Extension):
    """`{% generation %}...{% endgeneration %}` marks assistant text (for training): render it."""

    tags = {"generation"}  # noqa: RUF012 (jinja's own class attribute)

    def parse(self, parser: jinja2.parser.Parser) -> jinja2.nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.Scope(body).set_lineno(lineno)


class _TemplateDict:
    """`dict(...)` for templates, without exposing the type itself to attribute tricks."""

    def __call__(self, *args: Any, **kwargs: Any) -> dict[Any, Any]:
        return dict(*args, **kwargs)

    def fromkeys(self, *args: Any) -> dict[Any, Any]:
        return dict.fromkeys(*args)


class _Namespace(jinja2.utils.Namespace):
    """`namespace(...)` that refuses underscore names, which could reach interpreter internals."""

    def __init__(*args: Any, **kwargs: Any) -> None:
        self, rest = args[0], args[1:]
        attrs = dict(*rest, **kwargs)
        for name in attrs:
            _Namespace._check(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name: str, value: Any) -> None:
        _Namespace._check(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check(name: object) -> None:
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(
                f"chat templates cannot store underscore attributes on a namespace: {name!r}"
            )


def _raise_exception(message: str) -> None:
    raise _TemplateRaised(message)


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    # Jinja's own tojson escapes HTML characters; Hugging Face's writes plain JSON.
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _strftime_now(format: str) -> str:
    return datetime.now().strftime(format)


def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[_GenerationTag, jinja2.ext.loopcontrols],
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.globals["dict"] = _TemplateDict()
    env.globals["namespace"] = _Namespace
    return env


def _plain(value: Any) -> Any:
    """Rebuild `value` from plain JSON types, so the sandbox only ever sees inert data."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, Mapping):
        return {_plain(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, tuple):
        return tuple(_plain(item) for item in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    model_dump = getattr(value, "model_dump", None)
    if callable(model_dump):
        return _plain(model_dump())
    return f"<{type(value).__name__}>"


def _messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Plain message dicts without None values, with reasoning under every name templates read."""
    out: list[dict[str, Any]] = []
    for message in _plain(list(messages)):
        if not isinstance(message, dict):
            raise InvalidRequestError(
                f"chat messages must be objects, got {message!r}", param="messages"
            )
        message = {key: value for key, value in message.items() if value is not None}
        reasoning = next((message[k] for k in _REASONING_FIELDS if k in message), None)
        if reasoning is not None:
            message = {"thinking": reasoning, **message, "reasoning_content": reasoning}
        out.append(message)
    return out


class ChatTemplate:
    """A compiled chat template.

    Args:
        source: the jinja source, as in `tokenizer_config.json` or `chat_template.jinja`.
        special_tokens: variables every render gets, e.g. `{"bos_token": "<s>"}`.

    Raises:
        CortexError: the source is not a valid template.
    """

    def __init__(self, source: str, special_tokens: Mapping[str, str] | None = None) -> None:
        self.source = source
        self.special_tokens = dict(special_tokens or {})
        try:
            self._template = _environment().from_string(source)
        except jinja2.TemplateSyntaxError as exc:
            raise CortexError(f"the model's chat template is invalid: {exc}") from exc

    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        add_generation_prompt: bool = True,
        tools: Sequence[Mapping[str, Any]] | None = None,
        continue_final_message: bool = False,
        **variables: Any,
    ) -> str:
        """Render a conversation to the prompt text.

        Args:
            messages: `{"role", "content", ...}` dicts (or pydantic models / dataclasses).
            add_generation_prompt: end with the header that opens the assistant's turn.
            tools: JSON schemas of the tools on offer (templates that ignore tools ignore them).
            continue_final_message: leave the last message open so the model continues it
                (an assistant prefill); implies no generation prompt.
            **variables: more template variables (`documents`, `enable_thinking`...).

        Raises:
            InvalidRequestError: the template refuses these messages (`raise_exception`, a
                missing field, an operation the sandbox forbids).
        """
        if not messages:
            raise InvalidRequestError("the conversation has no messages", param="messages")
        chat = _messages(messages)
        final_content = ""
        if continue_final_message:
            add_generation_prompt = False
            content = chat[-1].get("content")
            if not isinstance(content, str):
                raise InvalidRequestError("only a text message can be continued", param="messages")
            final_content = content
            chat[-1]["content"] = content + _CONTINUE_TAG
        context = {**self.special_tokens, **_plain(variables)}
        context.setdefault("documents", None)
        try:
            rendered: str = self._template.render(
                messages=chat,
                tools=_plain(list(tools)) if tools is not None else None,
                add_generation_prompt=add_generation_prompt,
                **context,
            )
        except _TemplateRaised as exc:
            raise InvalidRequestError(str(exc), param="messages") from exc
        except (jinja2.TemplateError, TypeError, ValueError, KeyError, AttributeError) as exc:
            raise InvalidRequestError(
                f"the chat template cannot render these messages: {exc}", param="messages"
            ) from exc
        if continue_final_message:
            rendered = _cut_at_continue_tag(rendered, final_content)
        return rendered


def _cut_at_continue_tag(rendered: str, final_content: str) -> str:
    """Drop everything from the continue tag on, as Hugging Face does."""
    tag = _CONTINUE_TAG.strip()
    if tag not in rendered or final_content.strip() not in rendered:
        raise InvalidRequestError(
            "the chat template drops the final message, so it cannot be continued",
            param="messages",
        )
    cut = rendered.rindex(tag)
    if rendered[cut : cut + len(_CONTINUE_TAG)] == _CONTINUE_TAG:
        return rendered[:cut]
    return rendered[:cut].rstrip()
