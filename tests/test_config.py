"""The three config files: examples load, every kind of mistake is named, env overrides apply."""

from __future__ import annotations

from pathlib import Path

import pytest

from cortex.config import (
    CortexConfig,
    ModelsConfig,
    NeuronConfig,
    detect_kind,
    load_config,
    load_cortex_config,
    load_models_config,
    load_neuron_config,
)
from cortex.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str, name: str = "cfg.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def error_of(path: Path, **kwargs: object) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(path, **kwargs)  # type: ignore[arg-type]
    return info.value


def test_examples_load_and_are_detected() -> None:
    cortex = load_config(ROOT / "cortex.example.toml", env={})
    assert isinstance(cortex, CortexConfig)
    assert [n.name for n in cortex.neurons] == ["beast", "benjy", "vllm"]
    assert cortex.neurons[2].kind == "openai"
    assert str(cortex.gateway.listen) == "0.0.0.0:31313"
    assert cortex.gateway.metrics_listen.port == 31314
    assert cortex.eviction.strategy == "lru"
    assert cortex.eviction.defrag_after_cycles == 50
    models = load_models_config(cortex.models_config)
    assert isinstance(models, ModelsConfig)
    profile = models.profile("smollm")
    assert profile is not None and profile.id == "smollm2-135m-instruct" and profile.pinned
    neuron = load_config(ROOT / "neuron.example.toml", env={})
    assert isinstance(neuron, NeuronConfig)
    assert neuron.listen.host == "0.0.0.0" and neuron.listen.port == 13131
    assert neuron.preload == ["smollm2-135m-instruct"]
    assert isinstance(load_config(ROOT / "models.example.toml"), ModelsConfig)


def test_detect_kind() -> None:
    assert detect_kind({"gateway": {}}) == "cortex"
    assert detect_kind({"neurons": []}) == "cortex"
    assert detect_kind({"models": []}) == "models"
    assert detect_kind({"listen": "0.0.0.0:1"}) == "neuron"


def test_unknown_key_names_file_key_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, '[gateway]\nlisten = "0.0.0.0:1"\nlisten_port = 3\n')
    err = error_of(path)
    assert err.key == "gateway.listen_port"
    assert err.line == 3
    assert str(err) == f"{path}:3: gateway.listen_port: unknown key"


def test_bad_listen_address(tmp_path: Path) -> None:
    for value, fragment in [
        ("localhost", "expected 'HOST:PORT'"),
        ("0.0.0.0:99999", "port '99999' is not a number from 0 to 65535"),
        ("bad host!:80", "is not a valid host name"),
    ]:
        err = error_of(write(tmp_path, f'[gateway]\nmetrics_listen = "{value}"\n'))
        assert err.key == "gateway.metrics_listen"
        assert err.line == 2
        assert fragment in err.message


def test_ipv6_listen(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, 'listen = "[::1]:13131"\n'), kind="neuron", env={})
    assert isinstance(config, NeuronConfig)
    assert config.listen.host == "::1" and str(config.listen) == "[::1]:13131"


def test_bad_url_names_the_neuron(tmp_path: Path) -> None:
    text = (
        '[[neurons]]\nname = "a"\nendpoint = "http://a:13131"\n\n'
        '[[neurons]]\nname = "b"\nendpoint = "ftp://b"\n'
    )
    err = error_of(write(tmp_path, text))
    assert err.key == "neurons[1].endpoint"
    assert err.line == 7
    assert "expected an http:// or https:// URL" in err.message


def test_duplicate_neuron_names(tmp_path: Path) -> None:
    text = (
        '[[neurons]]\nname = "a"\nendpoint = "http://a:1"\n'
        '[[neurons]]\nname = "a"\nendpoint = "http://b:1"\n'
    )
    err = error_of(write(tmp_path, text))
    assert err.key == "neurons[1].name"
    assert err.line == 5
    assert "duplicate neuron name 'a'" in err.message


def test_duplicate_model_ids_and_colliding_aliases(tmp_path: Path) -> None:
    err = error_of(write(tmp_path, '[[models]]\nid = "m"\n[[models]]\nid = "m"\n'))
    assert (err.key, err.line) == ("models[1].id", 4)
    assert "duplicate model id 'm'" in err.message
    text = '[[models]]\nid = "m"\n[[models]]\nid = "n"\naliases = ["x", "m"]\n'
    err = error_of(write(tmp_path, text))
    assert err.key == "models[1].aliases[1]"
    assert err.line == 5
    assert "collides with models[0].id" in err.message


def test_wrong_types_and_values(tmp_path: Path) -> None:
    err = error_of(write(tmp_path, '[eviction]\nstrategy = "fifo"\n'))
    assert err.key == "eviction.strategy" and "'lru' or 'priority'" in err.message
    err = error_of(write(tmp_path, '[gateway]\npoll_interval_s = "soon"\n'))
    assert err.key == "gateway.poll_interval_s" and "valid number" in err.message
    err = error_of(write(tmp_path, 'device = "gpu"\n'), kind="neuron")
    assert err.key == "device" and "'cuda:N'" in err.message
    err = error_of(write(tmp_path, "[[neurons]]\nendpoint = 'http://a:1'\n"))
    assert err.key == "neurons[0].name" and err.message == "required key is missing"


def test_toml_syntax_error_has_line(tmp_path: Path) -> None:
    err = error_of(write(tmp_path, '[gateway]\nlisten = "0.0.0.0:1"\nbroken = = 1\n'))
    assert err.line == 3
    assert "not valid TOML" in err.message


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_config("/nonexistent/cortex.toml")


def test_env_overrides(tmp_path: Path) -> None:
    path = write(tmp_path, '[[neurons]]\nname = "a"\nendpoint = "http://a:1"\n')
    env = {
        "CORTEX_GATEWAY__LISTEN": "127.0.0.1:9999",
        "CORTEX_EVICTION__DEFRAG_AFTER_CYCLES": "7",
        "CORTEX_AUTH__KEYS": '["k1", "k2"]',
        "CORTEX_NEURONS__0__ENDPOINT": "http://other:13131",
        "CORTEX_HOME": "/not/a/key",  # not a key of cortex.toml: ignored
    }
    config = load_cortex_config(path, env=env)
    assert str(config.gateway.listen) == "127.0.0.1:9999"
    assert config.eviction.defrag_after_cycles == 7
    assert [k.get_secret_value() for k in config.auth.keys] == ["k1", "k2"]
    assert config.neurons[0].endpoint == "http://other:13131"
    neuron = load_neuron_config(None, env={"CORTEX_NEURON__MEMORY_MB": "512"})
    assert neuron.memory_mb == 512


def test_env_override_is_validated(tmp_path: Path) -> None:
    path = write(tmp_path, "[gateway]\n")
    with pytest.raises(ConfigError, match=r"gateway\.listen: expected 'HOST:PORT'"):
        load_cortex_config(path, env={"CORTEX_GATEWAY__LISTEN": "nope"})


def test_relative_paths_resolve_from_the_file(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub", '[[models]]\nid = "m"\n', "models.toml")
    config = load_cortex_config(
        write(tmp_path / "sub", 'models_config = "models.toml"\n', "c.toml"), env={}
    )
    assert load_models_config(config.models_config).models[0].id == "m"
    neuron = load_neuron_config(write(tmp_path, 'models_dirs = ["m"]\n', "n.toml"), env={})
    assert neuron.models_dirs == [tmp_path / "m"]
    assert load_models_config(tmp_path / "sub" / "models.toml").profile("m") is not None


def test_fake_harness_section(tmp_path: Path) -> None:
    text = (
        'name = "n1"\n[fake]\nload_s = 0.5\nfail_load = ["b"]\n'
        '[[fake.models]]\nid = "a"\nmemory_mb = 100\n[[fake.models]]\nid = "a"\n'
    )
    err = error_of(write(tmp_path, text), kind="neuron")
    assert err.key == "fake.models[1].id"
    assert err.line == 9


def test_an_open_gateway_binds_localhost_unless_the_file_says_otherwise(tmp_path: Path) -> None:
    open_ = load_cortex_config(write(tmp_path, "[gateway]\n"), env={})
    assert [str(a) for a in open_.bind()] == ["127.0.0.1:31313", "127.0.0.1:31314"]
    keyed = load_cortex_config(write(tmp_path, '[auth]\nkeys = ["k"]\n'), env={})
    assert [str(a) for a in keyed.bind()] == ["0.0.0.0:31313", "0.0.0.0:31314"]
    written = load_cortex_config(write(tmp_path, '[gateway]\nlisten = "0.0.0.0:5"\n'), env={})
    assert [str(a) for a in written.bind()] == ["0.0.0.0:5", "127.0.0.1:31314"]
    env = {"CORTEX_GATEWAY__METRICS_LISTEN": "0.0.0.0:6"}
    overridden = load_cortex_config(write(tmp_path, "[gateway]\n"), env=env)
    assert str(overridden.bind()[1]) == "0.0.0.0:6"


def test_secrets_are_never_printed(tmp_path: Path) -> None:
    text = (
        '[auth]\nkeys = ["sk-api-secret"]\nadmin_keys = ["sk-admin-secret"]\n'
        '[[neurons]]\nname = "a"\nendpoint = "http://a:1"\ntoken = "node-secret"\n'
    )
    config = load_cortex_config(write(tmp_path, text), env={})
    shown = config.model_dump_json() + repr(config) + str(config)
    for secret in ("sk-api-secret", "sk-admin-secret", "node-secret"):
        assert secret not in shown
    assert config.neurons[0].token is not None
    assert config.neurons[0].token.get_secret_value() == "node-secret"
