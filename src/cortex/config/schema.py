"""The schema of the three config files: frozen pydantic models, validated in one place."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_serializer,
    model_validator,
)

__all__ = [
    "QUANTS",
    "AuthConfig",
    "BudgetConfig",
    "ConfigKind",
    "CortexConfig",
    "EvictionConfig",
    "FakeConfig",
    "FakeModel",
    "GatewayConfig",
    "KeyedError",
    "LimitsConfig",
    "Listen",
    "ModelProfile",
    "ModelsConfig",
    "NeuronConfig",
    "NeuronEndpoint",
    "NeuronModel",
    "Quant",
    "StateConfig",
]


class KeyedError(ValueError):
    """A validation fault that knows its key path (raised inside model validators)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message


ConfigKind = Literal["cortex", "models", "neuron"]

QUANTS = ("none", "bf16", "int8", "int4", "int4-g32", "int4-g64", "int4-g128")
"""Values of `quant` (see `cortex.engine.quant`): float as the checkpoint or the device's dtype,
bfloat16, int8 per channel, int4 group-wise (groups 32 and 64 by matrix unless named)."""
Quant = Literal["none", "bf16", "int8", "int4", "int4-g32", "int4-g64", "int4-g128"]

_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Listen(_Frozen):
    """A listen address, written `HOST:PORT` in the files (`[::1]:80` for IPv6)."""

    host: str
    port: int = Field(ge=0, le=65535)

    @model_validator(mode="before")
    @classmethod
    def _parse(cls, value: Any) -> Any:
        if isinstance(value, Listen | dict):
            return value
        if not isinstance(value, str):
            raise ValueError(f"expected a string 'HOST:PORT', got {type(value).__name__}")
        return _parse_listen(value)

    @model_serializer
    def _as_text(self) -> str:
        return str(self)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def loopback(self) -> bool:
        """Whether only this machine can connect (127.0.0.0/8, ::1, localhost)."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


def _parse_listen(text: str) -> dict[str, Any]:
    expected = f"expected 'HOST:PORT' (like 0.0.0.0:13131), got {text!r}"
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep:
            raise ValueError(expected)
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{host!r} is not an IPv6 address; {expected}") from None
    else:
        host, sep, port = text.rpartition(":")
        if not sep or not host:
            raise ValueError(expected)
        if not _is_host(host):
            raise ValueError(f"{host!r} is not a valid host name or address; {expected}")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"port {port!r} is not a number from 0 to 65535; {expected}")
    return {"host": host, "port": int(port)}


def _is_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return bool(_HOSTNAME.match(host))


def _check_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected an http:// or https:// URL with a host, got {value!r}")
    host = parts.hostname
    if not _is_host(host):
        raise ValueError(f"{host!r} in {value!r} is not a valid host name or address")
    try:
        _ = parts.port
    except ValueError:
        raise ValueError(f"the port in {value!r} is not a number from 0 to 65535") from None
    return value.rstrip("/")


# --- cortex.toml ----------------------------------------------------------------------------


class GatewayConfig(_Frozen):
    """`[gateway]`: where the gateway listens and how it talks to neurons."""

    listen: Listen = Field(
        default=Listen(host="0.0.0.0", port=31313),
        description="Address of the API listener (OpenAI + Anthropic routes). Left unset, it "
        "is 127.0.0.1:31313 unless `[auth] keys` are set: an open gateway is never reachable "
        "from the network by accident (a wider address without keys logs a warning).",
    )
    metrics_listen: Listen = Field(
        default=Listen(host="0.0.0.0", port=31314),
        description="Address of the Prometheus metrics listener (its own port). Left unset, "
        "127.0.0.1:31314 unless `[auth] keys` are set.",
    )
    poll_interval_s: float = Field(
        default=5.0, gt=0, description="Seconds between polls of each neuron's status."
    )
    connect_timeout_s: float = Field(
        default=5.0, gt=0, description="Seconds to wait for a TCP connection to a neuron."
    )
    request_timeout_s: float = Field(
        default=600.0,
        gt=0,
        description="Seconds to wait for the next bytes from a neuron before giving up (504).",
    )
    load_timeout_s: float = Field(
        default=600.0, gt=0, description="Seconds a cold model load may take before it fails."
    )
    max_body_mb: float = Field(
        default=32.0, gt=0, description="Largest request body accepted, in MB (else 413)."
    )
    drain_timeout_s: float = Field(
        default=30.0,
        ge=0,
        description="At SIGTERM, seconds in-flight requests may take to finish while new ones "
        "get 503, before the gateway exits; streams still running then end with an error event.",
    )
    cors_origins: list[str] = Field(
        default_factory=list,
        description="Origins browsers may call the API from (CORS), e.g. `https://app.example`; "
        "`*` allows any. Empty: CORS off (no CORS headers, preflights refused).",
    )


class EvictionConfig(_Frozen):
    """`[eviction]`: how room is made for a model that does not fit."""

    strategy: Literal["lru", "priority"] = Field(
        default="lru",
        description="`lru` evicts the least recently used idle models fleet-wide; "
        "`priority` evicts the lowest priority first, then LRU.",
    )
    defrag_after_cycles: int = Field(
        default=50,
        ge=0,
        description="After this many load/unload cycles on a node, unload its unpinned idle "
        "models at a quiet moment to defragment memory (0 = never).",
    )


class NeuronEndpoint(_Frozen):
    """`[[neurons]]`: one node of the fleet."""

    name: str = Field(min_length=1, description="Unique node name, used in metrics and routing.")
    endpoint: str = Field(description="Base URL of the node, e.g. `http://beast.internal:13131`.")
    kind: Literal["neuron", "openai"] = Field(
        default="neuron",
        description="`neuron` (cortex-neuron, full lifecycle) or `openai` (an external "
        "OpenAI-compatible server: vLLM, llama.cpp, SGLang, Ollama; routed, never loaded).",
    )
    token: SecretStr | None = Field(
        default=None,
        description="Bearer token the node requires (its `token`); never printed or logged.",
    )

    @field_validator("endpoint")
    @classmethod
    def _endpoint_is_url(cls, value: str) -> str:
        return _check_url(value)


class BudgetConfig(_Frozen):
    """`[[auth.budgets]]`: a cap on the tokens one key spends (prompt plus completion)."""

    key: SecretStr | None = Field(
        default=None, description="The key the budget applies to (or give `key_id`)."
    )
    key_id: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{12}$",
        description="The key's id instead of the key: the first 12 hex digits of its SHA-256 "
        "(`cortex keys usage` lists them).",
    )
    tokens: int = Field(ge=1, description="Most tokens the key may spend in the window.")
    window: Literal["balance", "rolling"] = Field(
        default="rolling",
        description="`balance`: spent once, for good (429 insufficient_quota when used up); "
        "`rolling`: over the last `seconds` (429 rate_limit_exceeded with Retry-After).",
    )
    seconds: float = Field(default=86400.0, gt=0, description="A rolling window's length.")

    @model_validator(mode="after")
    def _one_key(self) -> BudgetConfig:
        if (self.key is None) == (self.key_id is None):
            raise ValueError("give exactly one of `key` and `key_id`")
        return self


class StateConfig(_Frozen):
    """`[state]`: where token budgets are kept (shared by every gateway of a deployment)."""

    redis_url: SecretStr | None = Field(
        default=None,
        description="`redis://host:port/db`: budgets kept in Redis, shared by several gateways "
        "behind a load balancer. Unset: an SQLite file on this host.",
    )
    sqlite_path: Path | None = Field(
        default=None,
        description="The SQLite file of budgets (default: `~/.cache/cortex/budgets.sqlite3`).",
    )


class AuthConfig(_Frozen):
    """`[auth]`: API keys. With no keys the API is open (bind to localhost then)."""

    keys: list[SecretStr] = Field(
        default_factory=list,
        description="Keys accepted on every API route (`Authorization: Bearer` or `x-api-key`); "
        "never printed or logged.",
    )
    admin_keys: list[SecretStr] = Field(
        default_factory=list,
        description="Keys for `/admin/*`; when empty, admin routes take the API keys.",
    )
    budgets: list[BudgetConfig] = Field(
        default_factory=list, description="`[[auth.budgets]]`: token caps per key."
    )


class LimitsConfig(_Frozen):
    """`[limits]`: per-key limits (per client address when the API has no keys); 0 = no limit."""

    concurrent_requests: int = Field(
        default=0,
        ge=0,
        description="Requests one key may have in flight at once; more get 429 with Retry-After.",
    )
    requests_per_minute: float = Field(
        default=0.0,
        ge=0,
        description="Requests one key may start per minute on average; more get 429 with "
        "Retry-After (the seconds until the next one is allowed).",
    )
    burst: int = Field(
        default=0,
        ge=0,
        description="Requests one key may start at once before the rate applies "
        "(0 = a minute's worth, `requests_per_minute`).",
    )


class CortexConfig(_Frozen):
    """The gateway's `cortex.toml`."""

    gateway: GatewayConfig = Field(default_factory=GatewayConfig, description="`[gateway]`.")
    eviction: EvictionConfig = Field(default_factory=EvictionConfig, description="`[eviction]`.")
    neurons: list[NeuronEndpoint] = Field(
        default_factory=list, description="`[[neurons]]`: the nodes of the fleet."
    )
    models_config: Path | None = Field(
        default=None,
        description="Path of models.toml (relative paths are read from cortex.toml's folder).",
    )
    auth: AuthConfig = Field(default_factory=AuthConfig, description="`[auth]`.")
    limits: LimitsConfig = Field(default_factory=LimitsConfig, description="`[limits]`.")
    state: StateConfig = Field(default_factory=StateConfig, description="`[state]`.")

    @model_validator(mode="after")
    def _unique_names(self) -> CortexConfig:
        seen: dict[str, int] = {}
        for i, node in enumerate(self.neurons):
            if node.name in seen:
                raise KeyedError(
                    f"neurons[{i}].name",
                    f"duplicate neuron name {node.name!r} (also neurons[{seen[node.name]}])",
                )
            seen[node.name] = i
        return self

    @property
    def secured(self) -> bool:
        """Whether the API needs a key (`[auth] keys`)."""
        return bool(self.auth.keys)

    def bind(self) -> tuple[Listen, Listen]:
        """The API and metrics addresses to listen on.

        A listener the file (or an environment override) names is taken as written; one left
        to its default binds every interface only when the API needs keys, else 127.0.0.1, so
        an open gateway is never reachable from the network by accident.
        """
        g = self.gateway
        host = "0.0.0.0" if self.secured else "127.0.0.1"
        api = g.listen if "listen" in g.model_fields_set else Listen(host=host, port=31313)
        metrics = (
            g.metrics_listen
            if "metrics_listen" in g.model_fields_set
            else Listen(host=host, port=31314)
        )
        return api, metrics


# --- models.toml ----------------------------------------------------------------------------


class ModelProfile(_Frozen):
    """`[[models]]`: a placement profile and sampling defaults for one model."""

    id: str = Field(min_length=1, description="The model id as neurons report it.")
    aliases: list[str] = Field(
        default_factory=list, description="Other names clients may use for this model."
    )
    nodes: list[str] = Field(
        default_factory=list,
        description="Nodes it may be placed on, in order of preference (empty = anywhere).",
    )
    priority: int = Field(
        default=0, description="Higher is more important (for the `priority` strategy)."
    )
    pinned: bool = Field(default=False, description="Loaded at start and never evicted.")
    memory_mb: float | None = Field(
        default=None, gt=0, description="Memory the model needs, overriding the estimate."
    )
    context_length: int | None = Field(
        default=None, gt=0, description="Context window to advertise and enforce."
    )
    temperature: float | None = Field(default=None, ge=0, description="Default temperature.")
    top_p: float | None = Field(default=None, gt=0, le=1, description="Default top_p.")
    top_k: int | None = Field(default=None, ge=0, description="Default top_k (0 = off).")
    presence_penalty: float | None = Field(
        default=None,
        ge=-2,
        le=2,
        description="Default presence_penalty (Qwen3 suggests up to 1.5 against repetition).",
    )
    max_tokens: int | None = Field(default=None, gt=0, description="Default max_tokens.")
    source: str | None = Field(
        default=None,
        # cortex.neuron.pull.SOURCE_PATTERN with the `hf:` required (the hub's rule for names)
        pattern=r"^hf:[A-Za-z0-9_]+([-.][A-Za-z0-9_]+)*/[A-Za-z0-9_]+([-.][A-Za-z0-9_]+)*"
        r"(:[A-Za-z0-9_-]+)?$",
        description="Where a node that lacks the model pulls it from on first use: "
        "`hf:ORG/NAME` (safetensors) or `hf:ORG/NAME:QUANT` (a GGUF file of that quant).",
    )
    quant: Quant | None = Field(
        default=None,
        description="How a neuron holds this model's weights when it loads it (values as in "
        "neuron.toml's `quant`); a node's own `[models.ID] quant` wins over it. Unset: the "
        "node's `quant`.",
    )


class ModelsConfig(_Frozen):
    """models.toml: the `[[models]]` profiles."""

    models: list[ModelProfile] = Field(
        default_factory=list, description="`[[models]]`: one profile per model."
    )

    @model_validator(mode="after")
    def _unique_ids_and_aliases(self) -> ModelsConfig:
        owner: dict[str, str] = {}
        for i, model in enumerate(self.models):
            if model.id in owner:
                raise KeyedError(f"models[{i}].id", f"duplicate model id {model.id!r}")
            owner[model.id] = f"models[{i}].id"
        for i, model in enumerate(self.models):
            for j, alias in enumerate(model.aliases):
                if alias in owner:
                    raise KeyedError(
                        f"models[{i}].aliases[{j}]",
                        f"alias {alias!r} collides with {owner[alias]} ({alias!r})",
                    )
                owner[alias] = f"models[{i}].aliases[{j}]"
        return self

    def profile(self, name: str) -> ModelProfile | None:
        """The profile whose id or alias is `name`."""
        for model in self.models:
            if name == model.id or name in model.aliases:
                return model
        return None


# --- neuron.toml ----------------------------------------------------------------------------


class FakeModel(_Frozen):
    """`[[fake.models]]`: a model the fake harness pretends to serve."""

    id: str = Field(min_length=1, description="Model id.")
    memory_mb: float = Field(default=1000.0, gt=0, description="Memory it takes when loaded.")
    context_length: int = Field(default=4096, gt=0, description="Its context window.")


class FakeConfig(_Frozen):
    """`[fake]`: the fake harness of `cortex.testing` (`cortex-neuron --harness fake`)."""

    load_s: float = Field(default=0.0, ge=0, description="Seconds a load takes.")
    tokens_per_s: float = Field(default=1000.0, gt=0, description="Token rate of replies.")
    fail_load: list[str] = Field(default_factory=list, description="Ids whose load fails.")
    models: list[FakeModel] = Field(default_factory=list, description="`[[fake.models]]`.")


class NeuronModel(_Frozen):
    """`[models.ID]` in neuron.toml: how this node loads one model."""

    quant: Quant | None = Field(
        default=None, description="Like the node's `quant`, for this model only."
    )


class NeuronConfig(_Frozen):
    """A node's `neuron.toml` (top-level keys)."""

    listen: Listen = Field(
        default=Listen(host="0.0.0.0", port=13131),
        description="Address the neuron listens on. Left unset, 127.0.0.1:13131 unless `token` "
        "is set: an open node is never reachable from the network by accident.",
    )
    name: str | None = Field(default=None, description="Node name (default: the host name).")
    models_dirs: list[Path] = Field(
        default_factory=list,
        description="Folders scanned for models (HF layout, HF hub cache, .gguf files).",
    )
    device: str = Field(
        default="auto", description="`auto`, `cpu`, `cuda` or `cuda:N` (auto = cuda if present)."
    )
    memory_mb: float | None = Field(
        default=None, gt=0, description="Cap on the memory this neuron may use for models."
    )
    kv_cache_mb: float | None = Field(
        default=None, gt=0, description="KV cache budget per loaded model (default: automatic)."
    )
    preload: list[str] = Field(default_factory=list, description="Model ids loaded at start.")
    token: SecretStr | None = Field(
        default=None,
        description="Bearer token required on every route but /health (inference included); "
        "never printed or logged.",
    )
    quant: Quant | None = Field(
        default=None,
        description="How to hold model weights: `none` (float, the device's dtype), `bf16`, "
        "`int8` (per channel), `int4` (group-wise; `int4-g32`/`-g64`/`-g128` name the group "
        "size); a GGUF then keeps its Q4 blocks. Unset: as the checkpoint stores them.",
    )
    models: dict[str, NeuronModel] = Field(
        default_factory=dict,
        description="`[models.ID]`: per-model settings (`quant`), overriding the node's.",
    )
    fake: FakeConfig | None = Field(
        default=None, description="`[fake]`: settings of the fake harness (tests only)."
    )

    @field_validator("device")
    @classmethod
    def _device_name(cls, value: str) -> str:
        if value in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", value):
            return value
        raise ValueError(f"expected 'auto', 'cpu', 'cuda' or 'cuda:N', got {value!r}")

    def bind(self) -> Listen:
        """The address to listen on: `listen` as written when set, else every interface when a
        token guards the node, else 127.0.0.1 (an open node is never reachable by accident)."""
        if "listen" in self.model_fields_set:
            return self.listen
        return Listen(host="0.0.0.0" if self.token else "127.0.0.1", port=self.listen.port)

    @model_validator(mode="after")
    def _unique_fake_ids(self) -> NeuronConfig:
        if self.fake is not None:
            seen: set[str] = set()
            for i, model in enumerate(self.fake.models):
                if model.id in seen:
                    raise KeyedError(f"fake.models[{i}].id", f"duplicate model id {model.id!r}")
                seen.add(model.id)
        return self
