"""Every example in examples/ runs, as a user would run it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import KEY, Remote

pytestmark = pytest.mark.e2e

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def run(name: str, *args: str, timeout_s: float = 300.0) -> str:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_examples_are_short() -> None:
    for path in EXAMPLES.glob("*.py"):
        assert len(path.read_text().splitlines()) <= 65, path.name


def test_openai_client(remote: Remote) -> None:
    out = run(
        "openai_client.py", "--base-url", remote.gateway.url, "--model", "m1", "--api-key", KEY
    )
    assert "This is m1 on a. You said: Write a haiku about GPUs." in out
    assert "tool call: get_weather({'city': 'x'})" in out
    assert "answer: This is m1 on a. You said: Sunny, 21 C" in out


def test_anthropic_client(remote: Remote) -> None:
    out = run(
        "anthropic_client.py", "--base-url", remote.gateway.url, "--model", "m2", "--api-key", KEY
    )
    assert "This is m2 on a. You said: Write a haiku about GPUs." in out
    assert "tool use: get_weather({'city': 'x'})" in out
    assert "answer: This is m2 on a. You said: Sunny, 21 C" in out


def test_local_fleet() -> None:
    out = run("local_fleet.py", "--harness", "fake")
    assert "loaded smollm2-135m-instruct on left" in out
    assert "loaded smollm2-135m-instruct on right" in out
    assert "What is a cortex? -> 'This is smollm2-135m-instruct on" in out
    assert "Nodes" in out and "Models" in out


@pytest.mark.slow
def test_embed_fleet() -> None:
    out = run("embed_fleet.py")
    assert "smollm2-135m-instruct: context" in out
    assert "reply: " in out and "streamed: " in out
    assert "tokens with the chat template" in out
