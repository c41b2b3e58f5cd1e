"""benchmarks/bench_tool_calls.py runs, every format streams the whole call, and it prints its
table and command."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "bench_tool_calls.py"


def test_benchmark_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("tool_calls_benchmark", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = module.main(["--rounds", "1"])
    assert [row["format"] for row in rows] == ["hermes", "llama3_json", "mistral", "qwen3_xml"]
    for row in rows[:3]:  # the JSON formats: the model's arguments, exactly
        assert json.loads(row["arguments"]) == module.ARGUMENTS
    xml = json.loads(rows[3]["arguments"])  # typed by the schema: `mode` an integer
    assert xml == {"path": "src/app.py", "text": module.CODE, "mode": 420}
    assert all(row["us_per_delta"] > 0 for row in rows)
    out = capsys.readouterr().out
    assert out.startswith("# python benchmarks/bench_tool_calls.py --rounds 1\n")
    assert "| format | reply chars |" in out
