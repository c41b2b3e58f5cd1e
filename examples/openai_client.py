"""The official openai SDK against cortex: a streamed chat, then a tool call answered.

cortex serve            # in another terminal
python examples/openai_client.py [--base-url URL] [--model ID] [--api-key KEY]
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from openai import OpenAI

WEATHER: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}

parser = argparse.ArgumentParser()
parser.add_argument("--base-url", default="http://127.0.0.1:31313")
parser.add_argument("--model", default="smollm2-135m-instruct")
parser.add_argument("--api-key", default="none")
args = parser.parse_args()
client = OpenAI(base_url=f"{args.base_url}/v1", api_key=args.api_key)

stream = client.chat.completions.create(
    model=args.model,
    messages=[{"role": "user", "content": "Write a haiku about GPUs."}],
    max_tokens=48,
    stream=True,
)
for chunk in stream:
    if chunk.choices:
        print(chunk.choices[0].delta.content or "", end="", flush=True)
print()

messages: Any = [{"role": "user", "content": "What is the weather in Paris? call tool get_weather"}]
reply = client.chat.completions.create(
    model=args.model, messages=messages, tools=[WEATHER], max_tokens=64
)
message = reply.choices[0].message
for call in message.tool_calls or []:
    arguments = json.loads(call.function.arguments)
    print(f"tool call: {call.function.name}({arguments})")
    messages += [message.model_dump(exclude_none=True)]
    messages += [{"role": "tool", "tool_call_id": call.id, "content": "Sunny, 21 C"}]
    answer = client.chat.completions.create(model=args.model, messages=messages, max_tokens=64)
    print("answer:", answer.choices[0].message.content)
if not message.tool_calls:
    print("no tool call; the model said:", message.content)
