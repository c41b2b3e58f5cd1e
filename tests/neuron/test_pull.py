"""Pulls through the real `huggingface_hub` client from the stand-in hub of `cortex.testing.hub`."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from cortex.errors import CortexError, InvalidRequestError, ModelNotFoundError, UpstreamError
from cortex.neuron.catalogue import ModelCatalogue
from cortex.neuron.pull import HubRef, PullProgress, pull_model
from cortex.neuron.pull_errors import DiskFullError
from cortex.neuron.quants import gguf_quant
from cortex.testing.checkpoints import tiny_gguf_bytes, tiny_llama_files
from cortex.testing.hub import StandInHub

TOKEN = "hf_good_token"


@pytest.fixture(autouse=True)
def online(monkeypatch: pytest.MonkeyPatch) -> None:
    """The session runs with HF_HUB_OFFLINE=1 (read at import): these tests reach the stand-in
    hub only (every call names its endpoint), so the client library is put online for them."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_TOKEN", raising=False)


@pytest.fixture(scope="module")
def hub() -> Iterator[StandInHub]:
    gguf = tiny_gguf_bytes()
    with StandInHub(tokens=(TOKEN,)) as hub:
        hub.add("org/tiny", tiny_llama_files(shards=2))
        hub.add("org/tiny-single", tiny_llama_files(shards=1, seed=1))
        hub.add("org/other-arch", tiny_llama_files(model_type="gpt_neox"))
        hub.add("org/gated", tiny_llama_files(seed=2), gated=True)
        hub.add(
            "org/tiny-GGUF",
            {f"tiny-{q}.gguf": gguf for q in ("Q4_K_M", "Q8_0", "F16")} | {"README.md": b"#"},
        )
        hub.add("org/empty", {"README.md": b"nothing here"})
        yield hub


def test_sharded_safetensors_pull_reports_bytes_and_is_listed(
    hub: StandInHub, tmp_path: Path
) -> None:
    events: list[PullProgress] = []
    plan, folder = pull_model(
        "org/tiny", endpoint=hub.url, cache_dir=tmp_path, supported={"llama"},
        on_progress=events.append,
    )  # fmt: skip
    assert plan.kind == "safetensors" and plan.architecture == "LlamaForCausalLM"
    names = [f.name for f in plan.files]
    assert names[0] == "config.json" and names[-2:] == [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ]
    assert {p.name for p in folder.iterdir()} >= {*names, "model.safetensors.index.json"}
    done = [e.done_bytes for e in events]
    assert done == sorted(done) and done[-1] == plan.total_bytes == events[-1].total_bytes
    assert events[-1].fraction == 1.0
    specs = ModelCatalogue([tmp_path], include_default=False, model_types={"llama"}).scan()
    assert [(s.id, s.source, s.path) for s in specs] == [("org/tiny", "hf-cache", folder)]


def test_a_second_pull_downloads_nothing(hub: StandInHub, tmp_path: Path) -> None:
    pull_model("org/tiny-single", endpoint=hub.url, cache_dir=tmp_path)
    hub.requests.clear()
    pull_model("org/tiny-single", endpoint=hub.url, cache_dir=tmp_path)
    assert not [r for r in hub.requests if r[0] == "GET"]


def test_gguf_by_quant_case_and_underscores_optional(hub: StandInHub, tmp_path: Path) -> None:
    plan, path = pull_model("hf:org/tiny-GGUF:q8-0", endpoint=hub.url, cache_dir=tmp_path)
    assert (plan.kind, plan.quant, plan.model_id) == ("gguf", "Q8_0", "org/tiny-GGUF:Q8_0")
    assert path.name == "tiny-Q8_0.gguf" and path.read_bytes() == tiny_gguf_bytes()
    assert [f.name for f in plan.files] == ["tiny-Q8_0.gguf"]
    specs = ModelCatalogue([tmp_path], include_default=False).scan()
    assert [(s.id, s.path) for s in specs] == [("org/tiny-GGUF:Q8_0", path)]
    # No quant: Q4_K_M when the repo has it.
    plan, _ = pull_model("org/tiny-GGUF", endpoint=hub.url, cache_dir=tmp_path)
    assert plan.quant == "Q4_K_M"


def test_missing_quant_names_the_quants_and_the_nearest(hub: StandInHub, tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError) as caught:
        pull_model("org/tiny-GGUF:Q5_K_M", endpoint=hub.url, cache_dir=tmp_path)
    message = caught.value.message
    assert "no Q5_K_M" in message and "Q4_K_M, Q8_0, F16" in message
    assert "nearest is Q4_K_M (org/tiny-GGUF:Q4_K_M)" in message
    assert caught.value.details == {"quants": ["Q4_K_M", "Q8_0", "F16"], "nearest": "Q4_K_M"}
    assert not any(tmp_path.rglob("*.gguf"))


def test_unsupported_architecture_is_refused_before_the_weights(
    hub: StandInHub, tmp_path: Path
) -> None:
    hub.requests.clear()
    with pytest.raises(InvalidRequestError, match=r"'gpt_neox' model .*cortex runs llama, qwen2"):
        pull_model(
            "org/other-arch", endpoint=hub.url, cache_dir=tmp_path, supported={"llama", "qwen2"}
        )
    assert [path for _, path, _ in hub.requests] == ["config.json", "config.json"]  # HEAD, GET


def test_repos_that_are_not_models_and_missing_repos(hub: StandInHub, tmp_path: Path) -> None:
    with pytest.raises(InvalidRequestError, match="neither safetensors"):
        pull_model("org/empty", endpoint=hub.url, cache_dir=tmp_path)
    with pytest.raises(ModelNotFoundError, match="there is no model org/nothing"):
        pull_model("org/nothing", endpoint=hub.url, cache_dir=tmp_path)
    with pytest.raises(InvalidRequestError, match="expected ORG/NAME"):
        HubRef.parse("../etc/passwd")


def test_gated_repo_needs_its_token(hub: StandInHub, tmp_path: Path) -> None:
    with pytest.raises(UpstreamError) as caught:
        pull_model("org/gated", endpoint=hub.url, cache_dir=tmp_path, token=False)
    assert caught.value.code == "hub_gated" and "set HF_TOKEN" in caught.value.message
    assert not ModelCatalogue([tmp_path], include_default=False).scan()
    with pytest.raises(UpstreamError, match="has no access"):
        pull_model("org/gated", endpoint=hub.url, cache_dir=tmp_path, token="hf_wrong")
    _, folder = pull_model("org/gated", endpoint=hub.url, cache_dir=tmp_path, token=TOKEN)
    assert (folder / "model.safetensors").is_file()


def test_resume_after_the_server_drops_the_connection_mid_file(tmp_path: Path) -> None:
    # huggingface_hub writes in 10 MB chunks: a file past that is cut after its first chunk.
    big = tiny_gguf_bytes() + bytes(range(256)) * (48 * 1024)  # ~12.6 MB
    with StandInHub(drop_after_bytes=11 * 1024 * 1024) as hub:
        hub.add("org/big-GGUF", {"big-Q8_0.gguf": big})
        _, path = pull_model("org/big-GGUF:Q8_0", endpoint=hub.url, cache_dir=tmp_path)
        ranges = [r for method, _, r in hub.requests if method == "GET"]
    assert path.read_bytes() == big
    assert ranges[0] is None and ranges[1] == "bytes=10485760-", ranges


@contextlib.contextmanager
def tmpfs(where: Path, size_kb: int) -> Iterator[Path]:
    """A tiny disk of its own (skips the test where mounting is not allowed)."""
    where.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    mount = ["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(where)]
    if subprocess.run(mount, capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=False)


def test_disk_too_small_is_refused_before_downloading(hub: StandInHub, tmp_path: Path) -> None:
    with tmpfs(tmp_path / "disk", 64) as disk:
        with pytest.raises(DiskFullError) as caught:
            pull_model("org/tiny", endpoint=hub.url, cache_dir=disk)
        assert caught.value.code == "disk_full" and "MB free" in caught.value.message
        assert isinstance(caught.value, CortexError) and caught.value.status == 500
        assert not ModelCatalogue([disk], include_default=False).scan()


def test_disk_filling_up_mid_pull_leaves_no_model(hub: StandInHub, tmp_path: Path) -> None:
    # Room for the bytes, not for the pages they take: the second shard hits ENOSPC.
    with tmpfs(tmp_path / "disk", 128) as disk:
        with pytest.raises(DiskFullError, match="free some space"):
            pull_model("org/tiny", endpoint=hub.url, cache_dir=disk)
        assert not ModelCatalogue([disk], include_default=False).scan()


def test_a_half_pulled_sharded_snapshot_is_not_a_model(hub: StandInHub, tmp_path: Path) -> None:
    _, folder = pull_model("org/tiny", endpoint=hub.url, cache_dir=tmp_path)
    (folder / "model-00002-of-00002.safetensors").unlink()
    assert not ModelCatalogue([tmp_path], include_default=False).scan()


@pytest.mark.parametrize(
    ("name", "quant"),
    [
        ("Qwen3-0.6B-Q4_K_M.gguf", "Q4_K_M"),
        ("qwen2.5-coder-7b-instruct-q8_0.gguf", "Q8_0"),
        ("Model.IQ3_XXS.gguf", "IQ3_XXS"),
        ("model-bf16-00001-of-00002.gguf", "BF16"),
        ("model.gguf", None),
    ],
)
def test_quant_of_a_gguf_file_name(name: str, quant: str | None) -> None:
    assert gguf_quant(name) == quant
