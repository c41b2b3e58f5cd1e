"""benchmarks/bench_translate.py runs, covers both directions, and prints its table and command."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "bench_translate.py"


def test_benchmark_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("translate_benchmark", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = module.main(["--tokens", "20", "--repeat", "1"])
    names = {row["name"] for row in rows}
    assert {"OpenAI -> Anthropic", "Anthropic -> OpenAI", "relay, no translation"} <= names
    assert {row["shape"] for row in rows} == {"text", "tool"}
    assert all(row["events"] >= 20 and row["us_per_token"] > 0 for row in rows)
    out = capsys.readouterr().out
    assert out.startswith("# python benchmarks/bench_translate.py --tokens 20 --repeat 1\n")
    assert "| reply | path |" in out
