"""Responses API input items -> OpenAI Chat messages, keeping Chat's ordering rules.

`system`/`developer` messages (and `instructions`) become system messages, adjacent ones
merged; assistant text, refusals and `function_call` items of one turn become one assistant
message with `tool_calls`; each `function_call_output` becomes a `tool` message right after
it (images a tool returned follow as a user message, since Chat tool messages are text
only); raw reasoning text (or its summary when it has none) rides on the next assistant
message as `reasoning_content`.
Items of unknown types (hosted tool calls echoed back) are dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cortex.errors import InvalidRequestError
from cortex.protocol.openai import (
    ChatMessage,
    ContentPart,
    FilePart,
    FunctionCall,
    ImagePart,
    ImageURL,
    TextPart,
    ToolCall,
)
from cortex.protocol.responses import (
    FunctionCallItem,
    FunctionCallOutputItem,
    InputContent,
    InputFile,
    InputImage,
    InputMessage,
    InputText,
    ItemReference,
    MessageContent,
    OutputText,
    ReasoningItem,
    Refusal,
    ResponsesRequest,
)

__all__ = ["input_to_messages"]


def input_to_messages(request: ResponsesRequest) -> list[ChatMessage]:
    """The Chat messages for `request.instructions` and `request.input`.

    Raises:
        InvalidRequestError: for `item_reference` items, a `function_call_output` without an
            earlier `function_call` of the same `call_id`, non-text system content, images
            or files by id, or no message at all.
    """
    return _Conversation().build(request)


class _Conversation:
    """Builds Chat messages from the input items, keeping Chat's ordering rules."""

    def __init__(self) -> None:
        self.messages: list[ChatMessage] = []
        self.call_ids: set[str] = set()
        self.reasoning: list[str] = []
        self.tool_images: list[ContentPart] = []

    def build(self, request: ResponsesRequest) -> list[ChatMessage]:
        if request.instructions:
            self._system(request.instructions)
        items = request.input
        if isinstance(items, str):
            items = [InputMessage(role="user", content=items)]
        for index, item in enumerate(items):
            if not isinstance(item, FunctionCallOutputItem):
                self._flush_tool_images()
            if isinstance(item, InputMessage):
                self._message(item, index)
            elif isinstance(item, FunctionCallItem):
                self._function_call(item)
            elif isinstance(item, FunctionCallOutputItem):
                self._function_call_output(item, index)
            elif isinstance(item, ReasoningItem):
                # Raw text, else the summary (where cortex wrote the thought when asked for one)
                self.reasoning.extend(part.text for part in item.content or item.summary)
            elif isinstance(item, ItemReference):
                raise InvalidRequestError(
                    "item_reference items are not supported: cortex does not store items",
                    param=f"input[{index}]",
                )
            # Any other item is a hosted tool's call or result: no local tool ran it.
        self._flush_tool_images()
        if not self.messages:
            raise InvalidRequestError("input must contain at least one message", param="input")
        return self.messages

    def _system(self, text: str) -> None:
        last = self.messages[-1] if self.messages else None
        if last is not None and last.role == "system" and isinstance(last.content, str):
            last.content = f"{last.content}\n\n{text}"
        else:
            self.messages.append(ChatMessage(role="system", content=text))

    def _message(self, item: InputMessage, index: int) -> None:
        param = f"input[{index}].content"
        if item.role in ("system", "developer"):
            self._system(_only_text(item.content, param))
        elif item.role == "user":
            self.reasoning.clear()
            self.messages.append(ChatMessage(role="user", content=_user_content(item, param)))
        else:
            text, refusal = _assistant_content(item.content)
            message = self._assistant()
            if text:
                message.content = f"{message.content}\n\n{text}" if message.content else text
            if refusal:
                message.refusal = refusal

    def _assistant(self) -> ChatMessage:
        """The open assistant turn (one not yet answered by tool results), or a new one."""
        last = self.messages[-1] if self.messages else None
        if last is None or last.role != "assistant":
            last = ChatMessage(role="assistant", content=None)
            self.messages.append(last)
        if self.reasoning:
            last.reasoning_content = "\n".join(self.reasoning)
            self.reasoning.clear()
        return last

    def _function_call(self, item: FunctionCallItem) -> None:
        message = self._assistant()
        call = ToolCall(
            id=item.call_id, function=FunctionCall(name=item.name, arguments=item.arguments)
        )
        message.tool_calls = [*(message.tool_calls or []), call]
        self.call_ids.add(item.call_id)

    def _function_call_output(self, item: FunctionCallOutputItem, index: int) -> None:
        if item.call_id not in self.call_ids:
            raise InvalidRequestError(
                f"No tool call found for function call output with call_id {item.call_id}.",
                param=f"input[{index}]",
            )
        output = item.output
        if isinstance(output, str):
            text = output
        else:
            text = "\n".join(part.text for part in output if isinstance(part, InputText))
            self.tool_images.extend(
                _chat_part(part, f"input[{index}].output")
                for part in output
                if not isinstance(part, InputText)
            )
        self.messages.append(ChatMessage(role="tool", tool_call_id=item.call_id, content=text))

    def _flush_tool_images(self) -> None:
        # Chat tool messages are text only: images a tool returned follow as a user message.
        if self.tool_images:
            self.messages.append(ChatMessage(role="user", content=self.tool_images))
            self.tool_images = []


def _only_text(content: str | Sequence[MessageContent], param: str) -> str:
    if isinstance(content, str):
        return content
    texts: list[str] = []
    for part in content:
        if not isinstance(part, InputText | OutputText):
            raise InvalidRequestError(
                f"system and developer messages take text only, not {part.type}", param=param
            )
        texts.append(part.text)
    return "\n".join(texts)


def _user_content(item: InputMessage, param: str) -> str | list[ContentPart]:
    if isinstance(item.content, str):
        return item.content
    if all(isinstance(part, InputText | OutputText) for part in item.content):
        return _only_text(item.content, param)
    parts: list[ContentPart] = []
    for part in item.content:
        if isinstance(part, Refusal):
            raise InvalidRequestError("user messages cannot hold a refusal part", param=param)
        parts.append(_chat_part(part, param))
    return parts


def _chat_part(part: InputContent | OutputText, param: str) -> ContentPart:
    if isinstance(part, InputText | OutputText):
        return TextPart(text=part.text)
    if isinstance(part, InputImage):
        if not part.image_url:
            raise InvalidRequestError(
                "input_image needs image_url (a URL or data: URI): cortex has no Files API",
                param=param,
            )
        return ImagePart(image_url=ImageURL(url=part.image_url, detail=part.detail))
    return _file_part(part, param)


def _file_part(part: InputFile, param: str) -> FilePart:
    if not part.file_data:
        raise InvalidRequestError(
            "input_file needs file_data: cortex has no Files API (file_id, file_url)",
            param=param,
        )
    file: dict[str, Any] = {"file_data": part.file_data}
    if part.filename:
        file["filename"] = part.filename
    return FilePart(file=file)


def _assistant_content(content: str | Sequence[MessageContent]) -> tuple[str, str]:
    if isinstance(content, str):
        return content, ""
    text = "".join(part.text for part in content if isinstance(part, OutputText | InputText))
    refusal = "".join(part.refusal for part in content if isinstance(part, Refusal))
    return text, refusal
