"""The deployment files under deploy/: the example neuron.toml loads, the unit runs it."""

from __future__ import annotations

import configparser
from pathlib import Path

from cortex.config import load_neuron_config
from cortex.neuron.server import build_parser

DEPLOY = Path(__file__).parents[2] / "deploy"


def test_the_example_config_is_valid() -> None:
    config = load_neuron_config(DEPLOY / "neuron.toml", env={})
    assert str(config.listen) == "0.0.0.0:13131"
    assert config.models_dirs and all(path.is_absolute() for path in config.models_dirs)
    assert config.preload == ["smollm2-135m-instruct"]


def test_the_unit_starts_the_neuron_with_that_config() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(DEPLOY / "cortex-neuron.service")
    assert set(unit.sections()) == {"Unit", "Service", "Install"}
    program, *args = unit["Service"]["ExecStart"].split()
    assert program.endswith("/cortex-neuron")
    parsed = build_parser().parse_args(args)
    assert parsed.config == Path("/etc/cortex/neuron.toml")
    assert unit["Service"]["KillSignal"] == "SIGTERM"
    assert int(unit["Service"]["TimeoutStopSec"]) > 30  # longer than the drain timeout
