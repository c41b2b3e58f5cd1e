"""What reading tool calls costs per token: each format's parser fed a reply in 4-character
deltas (about a token each), a call with about 1 KB of arguments after some text.

Every format streams its arguments piece by piece (JSON ones checked by `JsonPrefix` as they
come); the table prints microseconds per delta and per character, best of N rounds.

    python benchmarks/bench_tool_calls.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from cortex.engine.tool_calls import (
    HERMES,
    LLAMA3_JSON,
    MISTRAL,
    QWEN3_XML,
    ToolCallArguments,
    ToolCallFormat,
)

ARGUMENTS = {
    "path": "src/app.py",
    "text": "def main():\n    print('hello, world')\n" * 24,
    "mode": 420,
    "tags": ["a", "b", True, None, 1.5e3],
}
CODE = ARGUMENTS["text"]
CALLS = {
    "hermes": '<tool_call>\n{"name": "write", "arguments": ' + json.dumps(ARGUMENTS) + "}\n"
    "</tool_call>",
    "llama3_json": '<|python_tag|>{"name": "write", "parameters": ' + json.dumps(ARGUMENTS) + "}",
    "mistral": '[TOOL_CALLS] [{"name": "write", "arguments": ' + json.dumps(ARGUMENTS) + "}]",
    "qwen3_xml": f"<tool_call>\n<function=write>\n<parameter=path>\nsrc/app.py\n</parameter>\n"
    f"<parameter=text>\n{CODE}\n</parameter>\n<parameter=mode>\n420\n</parameter>\n</function>\n"
    "</tool_call>",
}
SCHEMAS = {"write": {"properties": {"path": {"type": "string"}, "text": {"type": "string"}}}}


def run(fmt: ToolCallFormat, deltas: list[str]) -> str:
    """Parse the reply; returns the call's arguments, its pieces joined."""
    parser = fmt.parser(tool_names={"write"}, tool_schemas=SCHEMAS)
    items = []
    for delta in deltas:
        items += parser.feed(delta)
    items += parser.finish()
    return "".join(i.text if isinstance(i, ToolCallArguments) else "" for i in items)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    print(f"# python benchmarks/bench_tool_calls.py --rounds {args.rounds}")
    print("| format | reply chars | deltas | us / delta | us / char |")
    print("|---|---|---|---|---|")
    rows = []
    for fmt in (HERMES, LLAMA3_JSON, MISTRAL, QWEN3_XML):
        reply = "Let me write that file.\n" + CALLS[fmt.name]
        deltas = [reply[i : i + 4] for i in range(0, len(reply), 4)]
        best = float("inf")
        for _ in range(args.rounds):
            start = time.perf_counter()
            arguments = run(fmt, deltas)
            best = min(best, time.perf_counter() - start)
        per_delta, per_char = best / len(deltas) * 1e6, best / len(reply) * 1e6
        print(f"| {fmt.name} | {len(reply)} | {len(deltas)} | {per_delta:.1f} | {per_char:.2f} |")
        rows.append({"format": fmt.name, "arguments": arguments, "us_per_delta": per_delta})
    return rows


if __name__ == "__main__":
    main()
