"""The OpenAPI 3.1 document of the neuron's wire API, served at `/openapi.json`.

Request bodies are generated from the pydantic models the app validates with, so they cannot
drift; responses are written out here and checked against real answers by the tests.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from cortex import __version__
from cortex.neuron.embeddings import EmbeddingRequest
from cortex.neuron.requests import (
    ChatCompletionRequest,
    CompletionRequest,
    ModelRequest,
    PullRequest,
)

__all__ = ["openapi_document"]

_REF = "#/components/schemas/{model}"


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


_NUMBER = {"type": "number"}
_INTEGER = {"type": "integer"}
_STRING = {"type": "string"}
_SSE_EVENT = {
    "type": "object",
    "description": "One server-sent event: its `data` (JSON, or `[DONE]`), and `event` when named.",
    "required": ["data"],
    "properties": {"data": _STRING, "event": _STRING},
}

_SCHEMAS: dict[str, dict[str, Any]] = {
    "Error": {
        "type": "object",
        "description": "OpenAI error envelope; 507 adds required_mb and free_mb, 404 on a "
        "generation adds loaded_models.",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["message", "type"],
                "properties": {
                    "message": _STRING,
                    "type": _STRING,
                    "param": _nullable(_STRING),
                    "code": _nullable(_STRING),
                    "required_mb": _NUMBER,
                    "free_mb": _NUMBER,
                    "loaded_models": {"type": "array", "items": _STRING},
                },
            }
        },
    },
    "Health": {
        "type": "object",
        "required": ["status", "version", "uptime_s"],
        "properties": {"status": {"const": "ok"}, "version": _STRING, "uptime_s": _NUMBER},
    },
    "ModelEntry": {
        "type": "object",
        "required": [
            "id",
            "state",
            "memory_mb",
            "context_length",
            "architecture",
            "parameters",
            "active_parameters",
            "device",
            "pinned",
            "in_flight",
            "last_used_at",
            "error",
        ],
        "properties": {
            "id": _STRING,
            "state": {"enum": ["available", "loading", "loaded", "unloading", "failed"]},
            "memory_mb": {**_NUMBER, "description": "Estimate until loaded, then actual."},
            "context_length": _nullable(_INTEGER),
            "architecture": _nullable(_STRING),
            "parameters": _nullable({**_INTEGER, "description": "Every weight of the model."}),
            "active_parameters": _nullable(
                {**_INTEGER, "description": "Weights one token runs through (MoE: top-k experts)."}
            ),
            "device": _STRING,
            "pinned": {"type": "boolean"},
            "in_flight": _INTEGER,
            "last_used_at": _nullable({**_NUMBER, "description": "Unix time."}),
            "error": _nullable(_STRING),
            "progress": {
                "type": "object",
                "description": "While loading: the phase (pulling, importing, loading, "
                "warming) and the fraction done (null if unknown); a pull adds its bytes.",
                "properties": {
                    "phase": _STRING,
                    "fraction": _nullable(_NUMBER),
                    "bytes": _INTEGER,
                    "total_bytes": _INTEGER,
                },
            },
            "generation_config": {"type": "object", "description": "The model's defaults."},
            "kind": {
                "enum": ["chat", "embedding"],
                "description": "`embedding` models answer `/v1/embeddings` only.",
            },
        },
    },
    "EmbeddingList": {
        "type": "object",
        "required": ["object", "data", "model", "usage"],
        "properties": {
            "object": {"const": "list"},
            "data": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["object", "index", "embedding"],
                    "properties": {
                        "object": {"const": "embedding"},
                        "index": _INTEGER,
                        "embedding": {
                            "description": "Floats, or base64 of little-endian float32.",
                            "anyOf": [{"type": "array", "items": _NUMBER}, _STRING],
                        },
                    },
                },
            },
            "model": _STRING,
            "usage": {
                "type": "object",
                "properties": {"prompt_tokens": _INTEGER, "total_tokens": _INTEGER},
            },
        },
    },
    "ModelList": {
        "type": "object",
        "required": ["object", "data"],
        "properties": {
            "object": {"const": "list"},
            "data": {"type": "array", "items": _ref("ModelEntry")},
        },
    },
    "Device": {
        "type": "object",
        "required": [
            "index",
            "kind",
            "name",
            "memory_total_mb",
            "memory_used_mb",
            "memory_free_mb",
        ],
        "properties": {
            "index": _INTEGER,
            "kind": {"enum": ["cuda", "cpu"]},
            "name": _STRING,
            "uuid": _nullable(_STRING),
            "memory_total_mb": _NUMBER,
            "memory_used_mb": _NUMBER,
            "memory_free_mb": _NUMBER,
            "utilization": _nullable(_NUMBER),
            "driver_version": _nullable(_STRING),
            "cores": _nullable(_INTEGER),
        },
    },
    "Status": {
        "type": "object",
        "required": [
            "name",
            "version",
            "uptime_s",
            "harness",
            "devices",
            "memory",
            "models",
            "requests",
            "load_cycles",
            "loads_started",
        ],
        "properties": {
            "name": _STRING,
            "version": _STRING,
            "uptime_s": _NUMBER,
            "harness": _STRING,
            "devices": {"type": "array", "items": _ref("Device")},
            "memory": {
                "type": "object",
                "required": ["limit_mb", "used_mb", "free_mb"],
                "properties": {
                    "limit_mb": _nullable(_NUMBER),
                    "used_mb": _NUMBER,
                    "free_mb": _NUMBER,
                },
            },
            "models": {"type": "array", "items": _ref("ModelEntry")},
            "requests": {
                "type": "object",
                "required": ["running", "waiting"],
                "properties": {"running": _INTEGER, "waiting": _INTEGER},
            },
            "load_cycles": _INTEGER,
            "loads_started": _INTEGER,
            "pulls": {
                "type": "array",
                "description": "Pulls running on their own (`POST /models/pull`) and their bytes.",
                "items": {
                    "type": "object",
                    "required": ["source", "phase", "fraction"],
                    "properties": {
                        "source": _STRING,
                        "phase": _STRING,
                        "fraction": _nullable(_NUMBER),
                        "bytes": _INTEGER,
                        "total_bytes": _INTEGER,
                        "file": _STRING,
                    },
                },
            },
        },
    },
    "Usage": {
        "type": "object",
        "required": ["prompt_tokens", "completion_tokens", "total_tokens"],
        "properties": {
            "prompt_tokens": _INTEGER,
            "completion_tokens": _INTEGER,
            "total_tokens": _INTEGER,
            "prompt_tokens_details": {
                "type": "object",
                "properties": {"cached_tokens": _INTEGER},
            },
        },
    },
    "ToolCallOut": {
        "type": "object",
        "required": ["id", "type", "function"],
        "properties": {
            "index": _INTEGER,
            "id": _STRING,
            "type": {"const": "function"},
            "function": {
                "type": "object",
                "required": ["name", "arguments"],
                "properties": {"name": _STRING, "arguments": _STRING},
            },
        },
    },
    "ChatCompletion": {
        "type": "object",
        "required": ["id", "object", "created", "model", "choices", "usage"],
        "properties": {
            "id": _STRING,
            "object": {"const": "chat.completion"},
            "created": _INTEGER,
            "model": _STRING,
            "system_fingerprint": {"type": "null"},
            "usage": _nullable(_ref("Usage")),
            "choices": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["index", "message", "finish_reason"],
                    "properties": {
                        "index": _INTEGER,
                        "finish_reason": {"enum": ["stop", "length", "tool_calls", None]},
                        "stop_reason": _nullable(_STRING),
                        "logprobs": _nullable({"type": "object"}),
                        "message": {
                            "type": "object",
                            "required": ["role", "content"],
                            "properties": {
                                "role": {"const": "assistant"},
                                "content": _nullable(_STRING),
                                "refusal": {"type": "null"},
                                "tool_calls": {"type": "array", "items": _ref("ToolCallOut")},
                            },
                        },
                    },
                },
            },
        },
    },
    "Completion": {
        "type": "object",
        "required": ["id", "object", "created", "model", "choices", "usage"],
        "properties": {
            "id": _STRING,
            "object": {"const": "text_completion"},
            "created": _INTEGER,
            "model": _STRING,
            "system_fingerprint": {"type": "null"},
            "usage": _nullable(_ref("Usage")),
            "choices": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["index", "text", "finish_reason"],
                    "properties": {
                        "index": _INTEGER,
                        "text": _STRING,
                        "finish_reason": {"enum": ["stop", "length", None]},
                        "stop_reason": _nullable(_STRING),
                        "logprobs": _nullable({"type": "object"}),
                    },
                },
            },
        },
    },
    "TokenCount": {
        "type": "object",
        "required": ["count", "max_model_len"],
        "properties": {
            "count": {**_INTEGER, "description": "Prompt tokens, chat template applied."},
            "max_model_len": _nullable({**_INTEGER, "description": "The context window."}),
        },
    },
    "OpenAIModelList": {
        "type": "object",
        "required": ["object", "data"],
        "properties": {
            "object": {"const": "list"},
            "data": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["id", "object", "created", "owned_by"],
                    "properties": {
                        "id": _STRING,
                        "object": {"const": "model"},
                        "created": _INTEGER,
                        "owned_by": _STRING,
                        "context_length": _nullable(_INTEGER),
                    },
                },
            },
        },
    },
}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    words = {
        400: "Malformed JSON, a wrong type or value, or `context_length_exceeded`.",
        401: "Missing or wrong `Authorization: Bearer <token>` (when the node has a token).",
        404: "Unknown model, or not loaded (the error lists the loaded models).",
        409: "The model is unloading, or a pull is asked of a node with HF_HUB_OFFLINE set.",
        500: "The load failed (the model is then `failed`; `disk_full` when a pull filled the "
        "disk) or an internal error.",
        502: "A pull the hub refused (`hub_gated`) or that could not reach it (`hub_unreachable`).",
        503: "The model's queue is full, or the request was cancelled by an unload "
        "(with `Retry-After`).",
        507: "Not enough memory: `required_mb` and `free_mb` in the error.",
    }
    return {str(code): _json(_ref("Error"), words[code]) for code in codes}


def _body(model: type[BaseModel]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": _ref(model.__name__)}}}


def _generation(summary: str, model: type[BaseModel], result: str) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "requestBody": _body(model),
            "responses": {
                "200": {
                    "description": f"A `{result}`, or with `stream: true` server-sent events "
                    "of chunks ending with `data: [DONE]` (an error after the first chunk is a "
                    '`data: {"error": ...}` event).',
                    "content": {
                        "application/json": {"schema": _ref(result)},
                        "text/event-stream": {"schema": _SSE_EVENT},
                    },
                },
                **_errors(400, 404, 409, 503),
            },
        }
    }


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of every route of the neuron."""
    schemas = dict(_SCHEMAS)
    models = (ChatCompletionRequest, CompletionRequest, EmbeddingRequest, ModelRequest, PullRequest)
    for model in models:
        schema = model.model_json_schema(ref_template=_REF)
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    admin: list[dict[str, list[str]]] = [{"bearer": []}, {}]
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "cortex neuron",
            "version": __version__,
            "description": "The per-node API of cortex: models, their lifecycle, OpenAI serving.",
        },
        "paths": {
            "/health": {
                "get": {
                    "summary": "Liveness.",
                    "responses": {
                        "200": _json(_ref("Health"), "Alive."),
                        "503": _json(
                            {"type": "object", "properties": {"status": {"const": "draining"}}},
                            "Shutting down: in-flight requests finish, new ones are refused.",
                        ),
                    },
                }
            },
            "/status": {
                "get": {
                    "summary": "Node, devices, memory, models and requests.",
                    "responses": {"200": _json(_ref("Status"), "The node now.")},
                }
            },
            "/models": {
                "get": {
                    "summary": "Every model this node can serve.",
                    "responses": {"200": _json(_ref("ModelList"), "Models with their state.")},
                }
            },
            "/models/load": {
                "post": {
                    "summary": "Load a model; returns once loaded (concurrent loads share one). "
                    "With `source`, a model the node lacks is pulled from the hub first.",
                    "security": admin,
                    "requestBody": _body(ModelRequest),
                    "responses": {
                        "200": _json(_ref("ModelEntry"), "The loaded model."),
                        **_errors(400, 401, 404, 409, 500, 502, 507),
                    },
                }
            },
            "/models/unload": {
                "post": {
                    "summary": "Unload a model after draining its requests (`drain_timeout_s`).",
                    "security": admin,
                    "requestBody": _body(ModelRequest),
                    "responses": {
                        "200": _json(_ref("ModelEntry"), "The model, available again."),
                        **_errors(400, 401, 404),
                    },
                }
            },
            "/models/pull": {
                "post": {
                    "summary": "Pull a model from the Hugging Face hub into the node's cache, "
                    "without loading it; returns its entry once pulled.",
                    "security": admin,
                    "requestBody": _body(PullRequest),
                    "responses": {
                        "200": _json(_ref("ModelEntry"), "The pulled model, available."),
                        **_errors(400, 401, 404, 409, 500, 502),
                    },
                }
            },
            "/v1/chat/completions": _generation(
                "OpenAI chat completion.", ChatCompletionRequest, "ChatCompletion"
            ),
            "/v1/completions": _generation(
                "OpenAI text completion.", CompletionRequest, "Completion"
            ),
            "/v1/embeddings": {
                "post": {
                    "summary": "OpenAI embeddings from a loaded embedding model.",
                    "requestBody": _body(EmbeddingRequest),
                    "responses": {
                        "200": _json(_ref("EmbeddingList"), "One vector per input, in order."),
                        **_errors(400, 404, 409),
                    },
                }
            },
            "/v1/models": {
                "get": {
                    "summary": "OpenAI list of the loaded models.",
                    "responses": {"200": _json(_ref("OpenAIModelList"), "Loaded models.")},
                }
            },
            "/tokenize": {
                "post": {
                    "summary": "Count a chat's prompt tokens on its loaded model (vLLM's shape).",
                    "requestBody": _body(ChatCompletionRequest),
                    "responses": {
                        "200": _json(_ref("TokenCount"), "The count and the context window."),
                        **_errors(400, 404),
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics.",
                    "responses": {
                        "200": {
                            "description": "Text exposition format.",
                            "content": {"text/plain": {"schema": _STRING}},
                        }
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document.",
                    "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1.")},
                }
            },
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
