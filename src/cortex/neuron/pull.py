"""Pulls from the Hugging Face hub into its standard cache, through `huggingface_hub`.

`plan_pull(ref)` asks the hub what a repo holds (`HfApi.model_info`, sizes included) and
decides before any weight is downloaded: GGUF-only, safetensors (single or sharded), both, or
neither; for GGUF the quant (`:Q4_K_M`, case and underscores optional) picks the file, and a
missing quant is an error naming the quants there and the nearest one; for safetensors the
repo's `config.json` (fetched first, a few hundred bytes) must name an architecture the engine
runs. `pull(plan)` then downloads the files one by one with `hf_hub_download`, reporting bytes.

What can go wrong, and what the caller sees (each a `CortexError` in the client's dialect):

- the repo, revision or quant does not exist: 404 `model_not_found`, with what does exist;
- a gated repo without a token that opens it (the hub's 401/403): 502 `hub_gated`, saying to set
  `HF_TOKEN`;
- the node runs with `HF_HUB_OFFLINE` set: 409 `hub_offline`;
- the hub cannot be reached, or drops the connection for good: 502 `hub_unreachable` (a
  dropped connection is resumed by `huggingface_hub` itself with a Range request, and a pull run
  again resumes from the `.incomplete` blobs it left);
- the disk is too small: checked before downloading (free space against the bytes still
  missing), and a real ENOSPC mid-file is the same `disk_full` error.

Nothing half-written ever looks like a model: `huggingface_hub` writes each file as
`blobs/<etag>.incomplete` and links it into the snapshot only once whole; the small files come
first and the weights last, so a snapshot lacks its weights (single file) or some shards of its
index (sharded, which the catalogue checks) until the pull has finished.

Honours `HF_HOME`/`HF_HUB_CACHE` (the cache), `HF_TOKEN` (gated repos) and `HF_ENDPOINT`
(mirrors, the stand-in hub of `cortex.testing.hub`). Importing this module imports neither
torch nor `huggingface_hub`.
"""

from __future__ import annotations

import json
import re
import shutil
import threading
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from cortex.errors import InvalidRequestError, ModelNotFoundError
from cortex.neuron.pull_errors import DiskFullError, hub_errors
from cortex.neuron.quants import DEFAULT_QUANT, gguf_quant, nearest_quant, quant_bits, same_quant
from cortex.neuron.types import ModelSpec, ProgressCallback

__all__ = [
    "SOURCE_PATTERN",
    "HubPuller",
    "HubRef",
    "PullPlan",
    "PullProgress",
    "hub_cache_dir",
    "plan_pull",
    "pull",
    "pull_model",
]

_MB = 1024 * 1024
# Small files worth having beside the weights (tokenizer, templates, configs).
_SMALL_SUFFIXES = (".json", ".jinja", ".model", ".txt", ".tiktoken")
_NAME = r"[A-Za-z0-9_]+(?:[-.][A-Za-z0-9_]+)*"  # the hub's rule: no "--", no ".."
SOURCE_PATTERN = rf"^(?:hf:)?{_NAME}/{_NAME}(?::[A-Za-z0-9_-]+)?$"
"""What a source may look like: `[hf:]ORG/NAME[:QUANT]` (at most 96 characters in all)."""


@dataclass(frozen=True)
class HubRef:
    """What to pull: `ORG/NAME`, an optional GGUF quant and an optional revision.

    Written `ORG/NAME[:QUANT]`, optionally prefixed by `hf:` (a models.toml `source`).
    """

    repo: str
    quant: str | None = None
    revision: str | None = None

    @classmethod
    def parse(cls, text: str, *, revision: str | None = None) -> HubRef:
        """Read `[hf:]ORG/NAME[:QUANT]`.

        Raises:
            InvalidRequestError: not of that shape.
        """
        if len(text) > 96 or not re.fullmatch(SOURCE_PATTERN, text.strip()):
            raise InvalidRequestError(
                f"{text[:100]!r} is not a Hugging Face model: expected ORG/NAME or ORG/NAME:QUANT"
            )
        repo, _, quant = text.strip().removeprefix("hf:").partition(":")
        return cls(repo, quant or None, revision)

    def __str__(self) -> str:
        return self.repo + (f":{self.quant}" if self.quant else "")


@dataclass(frozen=True)
class HubFile:
    """One file of a pull: its name in the repo and its size in bytes."""

    name: str
    size: int


@dataclass(frozen=True)
class PullPlan:
    """What a pull downloads, decided from the repo's file list before any weight moves.

    Args:
        ref: what was asked for.
        kind: `safetensors` or `gguf`.
        files: in download order (small files first, weights last).
        commit: the commit the revision resolved to.
        quant: the GGUF quant chosen (None for safetensors).
        model_id: the id the neuron lists the pulled model under.
        architecture: from `config.json` (safetensors), when known.
    """

    ref: HubRef
    kind: Literal["safetensors", "gguf"]
    files: tuple[HubFile, ...]
    commit: str
    quant: str | None
    model_id: str
    architecture: str | None = None

    @property
    def total_bytes(self) -> int:
        """Bytes of every file of the pull."""
        return sum(f.size for f in self.files)


@dataclass(frozen=True)
class PullProgress:
    """A pull's progress: the file being downloaded and the bytes of it and of the whole pull."""

    file: str
    file_bytes: int
    file_total: int
    done_bytes: int
    total_bytes: int

    @property
    def fraction(self) -> float:
        """Done over total, 0..1."""
        return min(1.0, self.done_bytes / self.total_bytes) if self.total_bytes else 0.0


def hub_cache_dir() -> Path:
    """The hub cache `huggingface_hub` uses (`HF_HUB_CACHE`, else `HF_HOME/hub`)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE).expanduser()


def plan_pull(
    ref: HubRef,
    *,
    token: str | bool | None = None,
    endpoint: str | None = None,
    cache_dir: Path | None = None,
    supported: Collection[str] | None = None,
) -> PullPlan:
    """Decide what to download for `ref` (its config.json is fetched to check the architecture).

    Args:
        ref: the repo, quant and revision.
        token: the hub token (default: `HF_TOKEN` or the saved login; False: none).
        endpoint: the hub's URL (default: `HF_ENDPOINT` or huggingface.co).
        cache_dir: the hub cache (default: `hub_cache_dir()`).
        supported: Hugging Face `model_type`s the engine runs (None: no check).

    Raises:
        CortexError: see the module docstring.
    """
    from huggingface_hub import HfApi

    api = HfApi(endpoint=endpoint, token=token)
    with hub_errors(str(ref), ref.repo, ref.revision, token, endpoint):
        info = api.model_info(ref.repo, revision=ref.revision, files_metadata=True)
    commit = str(info.sha)
    siblings = {s.rfilename: int(s.size or 0) for s in info.siblings or []}
    ggufs = sorted(name for name in siblings if name.endswith(".gguf"))
    weights = sorted(name for name in siblings if name.endswith(".safetensors") and "/" not in name)
    if weights and ("config.json" in siblings) and (ref.quant is None or not ggufs):
        if ref.quant is not None:
            raise InvalidRequestError(
                f"{ref.repo} has safetensors weights and no GGUF files: drop ':{ref.quant}' "
                "(use `--quant` of `cortex serve` to quantize on load)"
            )
        small = sorted(
            name
            for name in siblings
            if "/" not in name and name.endswith(_SMALL_SUFFIXES) and name != "config.json"
        )
        files = ["config.json", *small, *weights]
        architecture = _check_architecture(
            ref, commit, token=token, endpoint=endpoint, cache_dir=cache_dir, supported=supported
        )
        return PullPlan(
            ref,
            "safetensors",
            tuple(HubFile(name, siblings[name]) for name in files),
            commit,
            None,
            ref.repo,
            architecture,
        )
    if ggufs:
        quant, chosen = _choose_gguf(ref, ggufs)
        return PullPlan(
            ref,
            "gguf",
            tuple(HubFile(name, siblings[name]) for name in chosen),
            commit,
            quant,
            f"{ref.repo}:{quant}" if quant else ref.repo,
        )
    raise InvalidRequestError(
        f"{ref.repo} has neither safetensors weights with a config.json nor GGUF files; "
        "cortex can serve neither"
    )


def _choose_gguf(ref: HubRef, ggufs: Sequence[str]) -> tuple[str | None, list[str]]:
    """The quant and the file(s) of it (every part of a split GGUF)."""
    by_quant: dict[str, list[str]] = {}
    for name in ggufs:
        if "mmproj" in name.lower():  # vision projectors are not language models
            continue
        by_quant.setdefault(gguf_quant(name) or Path(name).stem, []).append(name)
    available = sorted(by_quant, key=lambda q: (quant_bits(q) or 99.0, q))
    if not available:
        raise InvalidRequestError(f"{ref.repo} has no GGUF language model file")
    wanted = ref.quant
    if wanted is None:
        if len(available) == 1:
            wanted = available[0]
        elif DEFAULT_QUANT in available:
            wanted = DEFAULT_QUANT
        else:
            raise InvalidRequestError(
                f"{ref.repo} has several GGUF quants; pick one: "
                + ", ".join(f"{ref.repo}:{q}" for q in available)
            )
    for quant in available:
        if same_quant(quant, wanted):
            return quant, sorted(by_quant[quant])
    nearest = nearest_quant(wanted, available)
    raise ModelNotFoundError(
        f"{ref.repo} has no {wanted} GGUF; it has {', '.join(available)}"
        + (f"; the nearest is {nearest} ({ref.repo}:{nearest})" if nearest else ""),
        details={"quants": available, "nearest": nearest},
    )


def _check_architecture(
    ref: HubRef,
    commit: str,
    *,
    token: str | bool | None,
    endpoint: str | None,
    cache_dir: Path | None,
    supported: Collection[str] | None,
) -> str | None:
    from huggingface_hub import hf_hub_download

    with hub_errors(str(ref), ref.repo, ref.revision, token, endpoint):
        path = hf_hub_download(
            ref.repo,
            "config.json",
            revision=commit,
            cache_dir=cache_dir,
            token=token,
            endpoint=endpoint,
        )
    config = json.loads(Path(path).read_text())
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else config
    model_type = text.get("model_type") or config.get("model_type")
    architectures = config.get("architectures") or [model_type]
    if supported is not None and model_type not in supported:
        raise InvalidRequestError(
            f"{ref.repo} is a {model_type!r} model ({architectures[0]}); cortex runs "
            + ", ".join(sorted(supported)),
            code="unsupported_architecture",
        )
    return str(architectures[0]) if architectures and architectures[0] else None


def pull(
    plan: PullPlan,
    *,
    token: str | bool | None = None,
    endpoint: str | None = None,
    cache_dir: Path | None = None,
    on_progress: Callable[[PullProgress], None] | None = None,
) -> Path:
    """Download the plan's files; the snapshot folder (safetensors) or the GGUF file (first part).

    Files already in the cache are not downloaded again; an interrupted download resumes.

    Raises:
        CortexError: see the module docstring (`DiskFullError` before anything is written when
            the disk is too small).
    """
    from huggingface_hub import hf_hub_download

    cache = cache_dir or hub_cache_dir()
    _check_space(plan, cache)
    meter = _Meter(plan, on_progress)
    paths: list[Path] = []
    for item in plan.files:
        meter.begin(item)
        with hub_errors(str(plan.ref), plan.ref.repo, plan.ref.revision, token, endpoint):
            path = hf_hub_download(
                plan.ref.repo,
                item.name,
                revision=plan.ref.revision or "main",
                cache_dir=cache,
                token=token,
                endpoint=endpoint,
                tqdm_class=meter.bar_class(),
            )
        meter.end(item)
        paths.append(Path(path))
    if plan.kind == "gguf":
        return paths[0]
    return paths[0].parent


def pull_model(
    source: str,
    *,
    revision: str | None = None,
    token: str | bool | None = None,
    endpoint: str | None = None,
    cache_dir: Path | None = None,
    supported: Collection[str] | None = None,
    on_progress: Callable[[PullProgress], None] | None = None,
) -> tuple[PullPlan, Path]:
    """`plan_pull` then `pull` for a `[hf:]ORG/NAME[:QUANT]` source; the plan and the path."""
    ref = HubRef.parse(source, revision=revision)
    plan = plan_pull(ref, token=token, endpoint=endpoint, cache_dir=cache_dir, supported=supported)
    return plan, pull(plan, token=token, endpoint=endpoint, cache_dir=cache_dir,
                      on_progress=on_progress)  # fmt: skip


def _check_space(plan: PullPlan, cache: Path) -> None:
    """Refuse a pull the disk cannot hold, before writing anything."""
    repo_dir = cache / ("models--" + plan.ref.repo.replace("/", "--"))
    snapshot = repo_dir / "snapshots" / plan.commit
    missing = 0
    for item in plan.files:
        if (snapshot / item.name).exists():
            continue
        partial = sum(p.stat().st_size for p in (repo_dir / "blobs").glob("*.incomplete"))
        missing += item.size
        missing -= min(partial, item.size) if item is plan.files[-1] else 0
    probe = cache
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if missing > free:
        raise DiskFullError(
            f"pulling {plan.ref} needs {missing / _MB:,.1f} MB more but {probe} has "
            f"{free / _MB:,.1f} MB free; free some space or point HF_HOME elsewhere"
        )


class _Meter:
    """Turns `huggingface_hub`'s per-file progress bars into `PullProgress` reports."""

    def __init__(self, plan: PullPlan, on_progress: Callable[[PullProgress], None] | None) -> None:
        self.plan = plan
        self.on_progress = on_progress
        self.done_before = 0  # bytes of the files finished
        self.file = plan.files[0] if plan.files else HubFile("", 0)
        self.file_bytes = 0
        self.lock = threading.Lock()

    def begin(self, item: HubFile) -> None:
        self.file, self.file_bytes = item, 0
        self._report()

    def end(self, item: HubFile) -> None:
        self.done_before += item.size
        self.file_bytes = 0
        self._report(finished=item)

    def add(self, n: float) -> None:
        with self.lock:
            self.file_bytes = max(0, min(self.file.size, self.file_bytes + int(n)))
        self._report()

    def _report(self, finished: HubFile | None = None) -> None:
        if self.on_progress is None:
            return
        item = finished or self.file
        self.on_progress(
            PullProgress(
                file=item.name,
                file_bytes=item.size if finished else self.file_bytes,
                file_total=item.size,
                done_bytes=self.done_before + self.file_bytes,
                total_bytes=self.plan.total_bytes,
            )
        )

    def bar_class(self) -> type:
        meter = self

        class Bar:
            """The tqdm-shaped object `huggingface_hub` updates while it downloads a file."""

            def __init__(self, *args: Any, initial: float = 0, **kwargs: Any) -> None:
                if initial:
                    meter.add(initial)

            def update(self, n: float | None = 1) -> None:
                meter.add(n or 0)

            def __enter__(self) -> Bar:
                return self

            def __exit__(self, *exc: object) -> None:
                pass

            def close(self) -> None:
                pass

            def refresh(self) -> None:
                pass

            def set_postfix_str(self, *args: Any, **kwargs: Any) -> None:
                pass

        return Bar


class HubPuller:
    """A neuron's `Puller`: pulls `hf:` sources into the hub cache, reads the pulled model's spec.

    Args:
        dtype_bytes: bytes per weight once loaded (for the memory estimate).
        kv_cache_mb: the KV cache budget per model (None: one context window).
        supported: `model_type`s the engine runs (None: no check).
        cache_dir: the hub cache (default: `hub_cache_dir()`).
        endpoint: the hub (default: `HF_ENDPOINT`, else huggingface.co).
        token: the hub token (default: `HF_TOKEN` or the saved login).
    """

    def __init__(
        self,
        *,
        dtype_bytes: int = 4,
        kv_cache_mb: float | None = None,
        supported: Collection[str] | None = None,
        cache_dir: Path | None = None,
        endpoint: str | None = None,
        token: str | None = None,
    ) -> None:
        self.dtype_bytes = dtype_bytes
        self.kv_cache_mb = kv_cache_mb
        self.supported = supported
        self.cache_dir = cache_dir
        self.endpoint = endpoint
        self.token = token

    async def __call__(self, model_id: str, source: str, progress: ProgressCallback) -> ModelSpec:
        """Pull `source` (reporting phase `pulling` with bytes), return its spec as `model_id`
        (empty: the hub's id, `ORG/NAME[:QUANT]`)."""
        import anyio

        from cortex.neuron.catalogue import read_gguf_spec, read_hf_spec

        def report(step: PullProgress) -> None:
            progress(
                "pulling",
                round(step.fraction, 4),
                bytes=step.done_bytes,
                total_bytes=step.total_bytes,
                file=step.file,
            )

        def run() -> tuple[PullPlan, Path]:
            return pull_model(
                source,
                cache_dir=self.cache_dir,
                supported=self.supported,
                endpoint=self.endpoint,
                token=self.token,
                on_progress=report,
            )

        plan, path = await anyio.to_thread.run_sync(run)
        read = read_gguf_spec if plan.kind == "gguf" else read_hf_spec
        return read(
            model_id or plan.model_id,
            path,
            dtype_bytes=self.dtype_bytes,
            kv_cache_mb=self.kv_cache_mb,
            source="gguf" if plan.kind == "gguf" else "hf-cache",
        )
