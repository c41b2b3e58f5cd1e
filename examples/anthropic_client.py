"""The official anthropic SDK against cortex: a streamed message, then a tool use answered.

cortex serve            # in another terminal
python examples/anthropic_client.py [--base-url URL] [--model ID] [--api-key KEY]
"""

from __future__ import annotations

import argparse
from typing import Any

from anthropic import Anthropic

WEATHER: Any = {
    "name": "get_weather",
    "description": "The current weather in a city.",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}

parser = argparse.ArgumentParser()
parser.add_argument("--base-url", default="http://127.0.0.1:31313")
parser.add_argument("--model", default="smollm2-135m-instruct")
parser.add_argument("--api-key", default="none")
args = parser.parse_args()
client = Anthropic(base_url=args.base_url, api_key=args.api_key)

with client.messages.stream(
    model=args.model,
    max_tokens=48,
    messages=[{"role": "user", "content": "Write a haiku about GPUs."}],
    extra_body={"temperature": 0.7},  # the 2.x SDK takes sampling knobs through extra_body
) as stream:
    for text in stream.text_stream:
        print(text, end="", flush=True)
print()

messages: Any = [{"role": "user", "content": "What is the weather in Paris? call tool get_weather"}]
with client.messages.stream(
    model=args.model, max_tokens=64, messages=messages, tools=[WEATHER]
) as stream:
    reply = stream.get_final_message()
uses = [block for block in reply.content if block.type == "tool_use"]
for use in uses:
    print(f"tool use: {use.name}({use.input})")
    messages += [{"role": "assistant", "content": [b.model_dump() for b in reply.content]}]
    result = {"type": "tool_result", "tool_use_id": use.id, "content": "Sunny, 21 C"}
    messages += [{"role": "user", "content": [result]}]
    answer = client.messages.create(model=args.model, max_tokens=64, messages=messages)
    print("answer:", "".join(b.text for b in answer.content if b.type == "text"))
if not uses:
    print(
        "no tool use; the model said:", "".join(b.text for b in reply.content if b.type == "text")
    )
