"""A Fleet inside a Python program: no server, no port.

`embedded_fleet()` runs one neuron in this process serving the default model
(smollm2-135m-instruct, loaded at start); `Fleet.from_config(...)` would front real neurons.

    python examples/embed_fleet.py
"""

from __future__ import annotations

import asyncio

from cortex import embedded_fleet

MODEL = "smollm2-135m-instruct"


async def main() -> None:
    async with embedded_fleet() as fleet:
        for entry in fleet.catalogue():
            print(f"{entry.id}: context {entry.context_length}, loadable on {entry.loadable_on}")
        print("placement:", fleet.plan(MODEL).reason)

        question = {"role": "user", "content": "Name three primary colours."}
        reply = await fleet.complete({"model": MODEL, "messages": [question], "max_tokens": 24})
        print("reply:", reply["choices"][0]["message"]["content"])

        print("streamed: ", end="")
        body = {"model": MODEL, "messages": [question], "max_tokens": 24, "temperature": 0}
        async for chunk in fleet.stream(body):
            for choice in (chunk.payload or {}).get("choices", []):
                print(choice["delta"].get("content") or "", end="", flush=True)
        print()
        tokens = await fleet.count_tokens(MODEL, [question])
        print(f"the question is {tokens} tokens with the chat template")


if __name__ == "__main__":
    asyncio.run(main())
