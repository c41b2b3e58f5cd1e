"""The OpenAPI 3.1 document of the gateway's API, served at `/openapi.json`.

Request bodies are the JSON Schemas of the wire envelopes in `cortex.protocol` (the models the
gateway parses with), so the document cannot drift from what is accepted; error responses are
each dialect's envelope, so a client (or a fuzzer) can check every error it gets.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from cortex import __version__
from cortex.protocol import anthropic as A
from cortex.protocol import openai as O
from cortex.protocol.responses import ResponsesRequest

__all__ = ["openapi_document"]

_REF = "#/components/schemas/{model}"
_STRING = {"type": "string"}
_SSE_EVENT = {
    "type": "object",
    "description": "One server-sent event: its `data` (JSON, or `[DONE]`), and `event` when named.",
    "required": ["data"],
    "properties": {"data": _STRING, "event": _STRING},
}
_NULLABLE_STRING = {"anyOf": [_STRING, {"type": "null"}]}

_ERROR_SCHEMAS: dict[str, dict[str, Any]] = {
    "OpenAIError": {
        "type": "object",
        "description": "OpenAI's error envelope.",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["message", "type", "param", "code"],
                "properties": {
                    "message": _STRING,
                    "type": _STRING,
                    "param": _NULLABLE_STRING,
                    "code": _NULLABLE_STRING,
                },
            }
        },
    },
    "AnthropicError": {
        "type": "object",
        "description": "Anthropic's error envelope.",
        "required": ["type", "error"],
        "properties": {
            "type": {"const": "error"},
            "error": {
                "type": "object",
                "required": ["type", "message"],
                "properties": {"type": _STRING, "message": _STRING},
            },
        },
    },
    "Health": {
        "type": "object",
        "required": ["status"],
        "properties": {
            "status": {"enum": ["ok", "draining"]},
            "version": _STRING,
            "nodes_up": {"type": "integer"},
            "nodes": {"type": "integer"},
        },
    },
}

_WORDS = {
    400: "Malformed JSON, a wrong field, or the prompt does not fit the context window.",
    401: "Missing or wrong API key (`Authorization: Bearer` or `x-api-key`).",
    404: "Unknown model or route.",
    409: "The model is unloading.",
    413: "The body is over `[gateway] max_body_mb`.",
    429: "Over this key's concurrency or rate limit (`rate_limit_exceeded`, `Retry-After`), "
    "or its token budget (`insufficient_quota`; `Retry-After` for a rolling window).",
    502: "A node answered with something unusable.",
    503: "No node can take the request now, the gateway is shutting down, or its shared state "
    "(Redis) is unreachable (`Retry-After`).",
    504: "A node went silent for longer than `[gateway] request_timeout_s`.",
    507: "No node has the memory for the model.",
    529: "Anthropic's overloaded: no node can take the request now (`Retry-After`).",
}
_OPENAI_ERRORS = (400, 401, 404, 409, 413, 429, 502, 503, 504, 507)
_ANTHROPIC_ERRORS = (400, 401, 404, 409, 413, 429, 502, 504, 507, 529)


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(envelope: str, codes: tuple[int, ...]) -> dict[str, Any]:
    return {str(code): _json(_ref(envelope), _WORDS[code]) for code in codes}


def _inference(summary: str, request: str, envelope: str, codes: tuple[int, ...]) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref(request)}},
            },
            "responses": {
                "200": {
                    "description": "The reply, or with `stream: true` server-sent events (a "
                    "failure after the first event is an error event of the dialect).",
                    "content": {
                        "application/json": {"schema": {"type": "object"}},
                        "text/event-stream": {"schema": _SSE_EVENT},
                    },
                },
                **_errors(envelope, codes),
            },
        }
    }


def _get(summary: str, envelope: str = "OpenAIError", codes: tuple[int, ...] = (401,)) -> Any:
    return {
        "get": {
            "summary": summary,
            "responses": {
                "200": _json({"type": "object"}, "The answer."),
                **_errors(envelope, codes),
            },
        }
    }


_REQUESTS: tuple[type[BaseModel], ...] = (
    O.ChatCompletionRequest,
    O.CompletionRequest,
    O.EmbeddingRequest,
    A.MessagesRequest,
    A.CountTokensRequest,
    ResponsesRequest,
)


def _schemas() -> tuple[dict[str, Any], dict[Any, str]]:
    """The component schemas, and each request model's component name (pydantic qualifies
    names two modules share, like `Tool`)."""
    names, top = models_json_schema([(m, "validation") for m in _REQUESTS], ref_template=_REF)
    refs = {model: str(ref["$ref"]).rsplit("/", 1)[-1] for (model, _), ref in names.items()}
    return {**top.get("$defs", {}), **_ERROR_SCHEMAS}, refs


_ADMIN_SECURITY: list[dict[str, list[str]]] = [{"bearer": []}, {"apiKey": []}]
_NODE = {"name": "node", "in": "path", "required": True, "schema": _STRING}
_MODEL = {"type": "string", "minLength": 1}
_SAVE = {"type": "boolean", "description": "Also write the pin to models.toml."}


def _object(required: list[str], **properties: Any) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": properties}


def _admin(
    summary: str,
    codes: tuple[int, ...],
    *,
    body: dict[str, Any] | None = None,
    path_node: bool = False,
    method: str = "post",
) -> dict[str, Any]:
    """An `/admin` operation (admin key; errors in OpenAI's envelope)."""
    operation: dict[str, Any] = {"summary": summary, "security": _ADMIN_SECURITY}
    if path_node:
        operation["parameters"] = [_NODE]
    if body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": body}},
        }
    operation["responses"] = {
        "200": _json({"type": "object"}, "Done."),
        **_errors("OpenAIError", codes),
    }
    return {method: operation}


def _admin_paths() -> dict[str, Any]:
    """The `/admin` routes of `gateway/admin.py`, `gateway/budgets.py` and the dashboard."""
    model_and_node = _object(["model"], model=_MODEL, node=_STRING)
    return {
        "/admin/models/pin": _admin(
            "Pin a model (on `node`) and load it; with `save`, write models.toml.",
            (400, 401, 404, 409, 503, 507),
            body={**model_and_node, "properties": {**model_and_node["properties"], "save": _SAVE}},
        ),
        "/admin/models/unpin": _admin(
            "Unpin a model (it stays loaded until evicted); with `save`, write models.toml.",
            (400, 401, 404),
            body=_object(["model"], model=_MODEL, save=_SAVE),
        ),
        "/admin/nodes/{node}/cordon": _admin(
            "No new loads on the node; what is loaded keeps serving.", (401, 404), path_node=True
        ),
        "/admin/nodes/{node}/uncordon": _admin(
            "The node takes new loads again.", (401, 404), path_node=True
        ),
        "/admin/nodes/{node}/drain": _admin(
            "Cordon the node, move what is worth keeping elsewhere, unload the rest; the report.",
            (401, 404, 503),
            path_node=True,
        ),
        "/admin/budgets": _admin(
            "Each token budget's key id, cap, window and spend (`cortex keys usage`).",
            (401, 503),
            method="get",
        ),
        "/admin/dashboard": _admin(
            "What `/admin/status` answers, with per-model figures and the recent requests.",
            (401,),
            method="get",
        ),
    }


def _dashboard_paths() -> dict[str, Any]:
    """The dashboard's static page (no key: it holds no data)."""
    files = ["index.html", "app.js", "style.css"]
    return {
        "/ui": {
            "get": {
                "summary": "The web dashboard (a redirect to its page).",
                "security": [],
                "responses": {
                    "200": {
                        "description": "The page (when the client follows the redirect).",
                        "content": {"text/html": {"schema": _STRING}},
                    },
                    "307": {"description": "To `/ui/index.html`."},
                },
            }
        },
        "/ui/{file}": {
            "get": {
                "summary": "One of the dashboard's static files.",
                "security": [],
                "parameters": [
                    {"name": "file", "in": "path", "required": True, "schema": {"enum": files}}
                ],
                "responses": {
                    "200": {
                        "description": "The file.",
                        "content": {
                            "text/html": {"schema": _STRING},
                            "text/javascript": {"schema": _STRING},
                            "text/css": {"schema": _STRING},
                        },
                    },
                    **_errors("OpenAIError", (404,)),
                },
            }
        },
    }


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of every route of the gateway's API."""
    schemas, name = _schemas()
    admin_security = _ADMIN_SECURITY
    admin_body = {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["model"],
                    "properties": {"model": _STRING, "node": _STRING},
                }
            }
        },
    }
    admin_post = {
        "security": admin_security,
        "requestBody": admin_body,
        "responses": {
            "200": _json({"type": "object"}, "Done."),
            **_errors("OpenAIError", (400, 401, 404, 409, 503, 507)),
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "cortex gateway",
            "version": __version__,
            "description": "One OpenAI + Anthropic compatible API in front of a fleet of "
            "neurons. Every route but `/health` needs an API key when keys are configured.",
        },
        "security": [{"bearer": []}, {"apiKey": []}],
        "paths": {
            "/health": {
                "get": {
                    "summary": "Liveness and nodes up (503 while draining at shutdown).",
                    "security": [],
                    "responses": {
                        "200": _json(_ref("Health"), "Serving."),
                        "503": _json(_ref("Health"), "Draining: shutting down."),
                    },
                }
            },
            "/v1/models": _get("The merged catalogue (Anthropic's shape with anthropic-version)."),
            "/v1/models/{model}": {
                "get": {
                    "summary": "One model of the catalogue.",
                    "parameters": [
                        {"name": "model", "in": "path", "required": True, "schema": _STRING}
                    ],
                    "responses": {
                        "200": _json({"type": "object"}, "The model."),
                        **_errors("OpenAIError", (401, 404)),
                    },
                }
            },
            "/v1/chat/completions": _inference(
                "OpenAI chat completion.",
                name[O.ChatCompletionRequest],
                "OpenAIError",
                _OPENAI_ERRORS,
            ),
            "/v1/completions": _inference(
                "OpenAI text completion.",
                name[O.CompletionRequest],
                "OpenAIError",
                _OPENAI_ERRORS,
            ),
            "/v1/embeddings": {
                "post": {
                    "summary": "OpenAI embeddings (an embedding model; a chat model is a 400).",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref(name[O.EmbeddingRequest])}},
                    },
                    "responses": {
                        "200": _json({"type": "object"}, "The vectors, in input order."),
                        **_errors("OpenAIError", _OPENAI_ERRORS),
                    },
                }
            },
            "/v1/messages": _inference(
                "Anthropic message.",
                name[A.MessagesRequest],
                "AnthropicError",
                _ANTHROPIC_ERRORS,
            ),
            "/v1/messages/count_tokens": _inference(
                "Anthropic token count of a message request.",
                name[A.CountTokensRequest],
                "AnthropicError",
                _ANTHROPIC_ERRORS,
            ),
            "/v1/responses": _inference(
                "OpenAI Responses API (Codex CLI).",
                name[ResponsesRequest],
                "OpenAIError",
                _OPENAI_ERRORS,
            ),
            "/admin/status": {
                "get": {**_get("Nodes and models.")["get"], "security": admin_security}
            },
            "/admin/models/load": {"post": {"summary": "Load a model.", **admin_post}},
            "/admin/models/unload": {"post": {"summary": "Unload a model.", **admin_post}},
            "/admin/models/pull": {
                "post": {
                    "summary": "Pull a model from the Hugging Face hub onto a node (no load).",
                    "security": admin_security,
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["source"],
                                    "properties": {"source": _STRING, "node": _STRING},
                                }
                            }
                        },
                    },
                    "responses": {
                        "200": _json({"type": "object"}, "Pulled: the node's entry for it."),
                        **_errors("OpenAIError", (400, 401, 404, 409, 502, 503)),
                    },
                }
            },
            "/admin/placement": {
                "get": {
                    "summary": "Where a model would go (dry run).",
                    "security": admin_security,
                    "parameters": [
                        {"name": "model", "in": "query", "required": True, "schema": _STRING},
                        {"name": "exclude", "in": "query", "required": False, "schema": _STRING},
                    ],
                    "responses": {
                        "200": _json({"type": "object"}, "The plan."),
                        **_errors("OpenAIError", (400, 401, 404, 503)),
                    },
                }
            },
            **_admin_paths(),
            **_dashboard_paths(),
            "/openapi.json": _get("This document."),
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
            },
        },
    }
