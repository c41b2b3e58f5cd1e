"""Every entry point runs as a subprocess with --help and --version; `config check` works."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cortex import __version__

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

ENTRY_POINTS = [
    [str(BIN / "cortex")],
    [str(BIN / "cortex-gateway")],
    [str(BIN / "cortex-neuron")],
    [sys.executable, "-m", "cortex"],
]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=ROOT)


@pytest.mark.parametrize("command", ENTRY_POINTS, ids=lambda c: Path(c[-1]).name)
def test_version(command: list[str]) -> None:
    result = run(*command, "--version")
    assert result.returncode == 0, result.stderr
    assert __version__ in result.stdout


@pytest.mark.parametrize("command", ENTRY_POINTS, ids=lambda c: Path(c[-1]).name)
def test_help(command: list[str]) -> None:
    result = run(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout
    assert "default" in result.stdout


@pytest.mark.parametrize(
    ("subcommand", "expected"),
    [
        (["serve"], ["--config", "--listen", "--metrics-listen"]),
        (["status"], ["--url", "--admin-key", "http://127.0.0.1:31313"]),
        (["models"], ["--url", "--admin-key"]),
        (["load"], ["model", "--node", "--url"]),
        (["unload"], ["model", "--node", "--url"]),
        (["config", "check"], ["--kind", "file"]),
        (["import"], ["--out", "--dtype", "float32"]),
    ],
)
def test_subcommand_help_lists_options_with_defaults(
    subcommand: list[str], expected: list[str]
) -> None:
    result = run(str(BIN / "cortex"), *subcommand, "--help")
    assert result.returncode == 0, result.stderr
    for fragment in expected:
        assert fragment in result.stdout


def test_config_check_prints_resolved_config() -> None:
    result = run(str(BIN / "cortex"), "config", "check", "cortex.example.toml")
    assert result.returncode == 0, result.stderr
    assert "a valid cortex configuration" in result.stdout
    assert '"poll_interval_s": 5.0' in result.stdout
    assert '"listen": "0.0.0.0:31313"' in result.stdout


def test_config_check_hides_keys_and_tokens(tmp_path: Path) -> None:
    path = tmp_path / "cortex.toml"
    path.write_text(
        '[auth]\nkeys = ["sk-never-shown"]\n'
        '[[neurons]]\nname = "a"\nendpoint = "http://a:1"\ntoken = "tok-never-shown"\n'
    )
    result = run(str(BIN / "cortex"), "config", "check", str(path))
    assert result.returncode == 0, result.stderr
    assert "never-shown" not in result.stdout + result.stderr
    assert "**********" in result.stdout


def test_config_check_broken_file_names_the_key(tmp_path: Path) -> None:
    broken = tmp_path / "cortex.toml"
    text = (ROOT / "cortex.example.toml").read_text()
    broken.write_text(text.replace('strategy = "lru"', 'strategy = "newest"'))
    result = run(str(BIN / "cortex"), "config", "check", str(broken))
    assert result.returncode == 1
    assert "eviction.strategy" in result.stderr
    assert str(broken) in result.stderr


def test_config_check_kind_forced(tmp_path: Path) -> None:
    path = tmp_path / "n.toml"
    path.write_text('listen = "127.0.0.1:1"\n')
    result = run(str(BIN / "cortex"), "config", "check", "--kind", "neuron", str(path))
    assert result.returncode == 0, result.stderr
    assert "a valid neuron configuration" in result.stdout
