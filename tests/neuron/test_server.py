"""`cortex-neuron`'s configuration: the file, the flags over it, and the no-config default."""

from __future__ import annotations

from pathlib import Path

import pytest

from cortex.errors import ConfigError
from cortex.neuron.server import build_harness, build_parser, resolve_config
from cortex.testing import FakeHarness


def resolve(*argv: str):  # type: ignore[no-untyped-def]
    return resolve_config(build_parser().parse_args(list(argv)))


def test_with_no_config_the_default_model_is_served_on_13131() -> None:
    config = resolve()
    assert str(config.listen) == "0.0.0.0:13131"
    assert config.preload == ["smollm2-135m-instruct"]
    assert resolve("--models-dir", "/srv/models").preload == []


def test_flags_override_the_file(tmp_path: Path) -> None:
    path = tmp_path / "neuron.toml"
    path.write_text('listen = "127.0.0.1:1"\nmemory_mb = 10\nname = "file"\ndevice = "cpu"\n')
    config = resolve(
        "--config", str(path), "--listen", "127.0.0.1:2", "--memory-mb", "20",
        "--models-dir", "/a", "--models-dir", "/b", "--device", "cuda:1", "--token", "t",
    )  # fmt: skip
    assert (config.listen.port, config.memory_mb, config.name) == (2, 20, "file")
    assert config.models_dirs == [Path("/a"), Path("/b")]
    assert config.token is not None and config.token.get_secret_value() == "t"
    assert (config.device, config.preload) == ("cuda:1", [])


def test_bad_flags_name_the_flag() -> None:
    with pytest.raises(ConfigError, match="--listen"):
        resolve("--listen", "nowhere")
    with pytest.raises(ConfigError, match="--device"):
        resolve("--device", "tpu")


def test_the_fake_harness_reads_the_fake_table(tmp_path: Path) -> None:
    path = tmp_path / "neuron.toml"
    path.write_text(
        'name = "n1"\nmemory_mb = 500\n[fake]\nload_s = 0.5\nfail_load = ["b"]\n'
        '[[fake.models]]\nid = "a"\nmemory_mb = 100\n[[fake.models]]\nid = "b"\n'
    )
    harness = build_harness(resolve("--config", str(path)), "fake")
    assert isinstance(harness, FakeHarness)
    assert [m.id for m in harness.models()] == ["a", "b"]
    assert (harness.load_s, harness.fail_load, harness.node) == (0.5, frozenset({"b"}), "n1")
    assert harness.stats().memory_limit_mb == 500


def test_an_open_neuron_binds_localhost_unless_told_otherwise(tmp_path: Path) -> None:
    assert str(resolve().bind()) == "127.0.0.1:13131"
    assert str(resolve("--token", "t").bind()) == "0.0.0.0:13131"
    assert str(resolve("--listen", "0.0.0.0:9").bind()) == "0.0.0.0:9"
    path = tmp_path / "neuron.toml"
    path.write_text('listen = "0.0.0.0:7"\n')
    assert str(resolve("--config", str(path)).bind()) == "0.0.0.0:7"


def test_the_token_is_never_printed(tmp_path: Path) -> None:
    config = resolve("--token", "hunter2-secret")
    assert "hunter2-secret" not in repr(config)
    assert "hunter2-secret" not in config.model_dump_json()
