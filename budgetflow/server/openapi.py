"""The OpenAPI 3.1 description of what `budgetflow serve` answers (served at `/openapi.json`)."""

from __future__ import annotations

from typing import Any

__all__ = ["openapi_schema"]

_ERROR = {"$ref": "#/components/schemas/Error"}


def _errors(*statuses: int) -> dict[str, Any]:
    reasons = {
        400: "The request is malformed; `error.param` names the field",
        401: "Missing, invalid or revoked API key",
        404: "The model is not served here",
        413: "The request body is too large",
        429: "The key's budget or request rate is exhausted (see Retry-After)",
        502: "The upstream failed; `error.upstream_status` is its status",
        503: "The key store is unavailable (the server fails closed)",
        504: "The upstream did not answer in time",
    }
    return {
        str(status): {"description": reasons[status], "content": {"application/json": {"schema": _ERROR}}}
        for status in statuses
    }


def _message() -> dict[str, Any]:
    part = {
        "type": "object",
        "required": ["type"],
        "properties": {
            "type": {"enum": ["text", "image_url", "input_audio", "video_url"]},
            "text": {"type": "string"},
            "image_url": {"type": "object", "properties": {"url": {"type": "string"}}},
            "input_audio": {
                "type": "object",
                "properties": {"data": {"type": "string"}, "format": {"type": "string"}},
            },
        },
    }
    return {
        "type": "object",
        "required": ["role", "content"],
        "properties": {
            "role": {"enum": ["system", "developer", "user", "assistant", "tool"]},
            "content": {"anyOf": [{"type": "string"}, {"type": "array", "items": part}, {"type": "null"}]},
            "name": {"type": "string"},
            "tool_call_id": {"type": "string"},
            "tool_calls": {"type": "array", "items": {"type": "object"}},
        },
        "additionalProperties": False,
    }


def _chat_request() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["model", "messages"],
        "additionalProperties": False,
        "properties": {
            "model": {
                "type": "string",
                "minLength": 1,
                "description": "The upstream model, optionally behind a strategy prefix: "
                "vote-8/embedded, early_stop-16/M, best_of_n-4/M, single/M, adaptive/M; "
                "or OptiLLM's self_consistency-M, bon-M",
            },
            "messages": {"type": "array", "minItems": 1, "items": {"$ref": "#/components/schemas/Message"}},
            "max_tokens": {"type": "integer", "minimum": 1},
            "max_completion_tokens": {"type": "integer", "minimum": 1},
            "temperature": {"type": "number", "minimum": 0, "maximum": 2},
            "top_p": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
            "n": {"type": "integer", "minimum": 1, "maximum": 128},
            "stop": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
            "seed": {"type": "integer"},
            "stream": {"type": "boolean"},
            "stream_options": {"type": "object", "properties": {"include_usage": {"type": "boolean"}}},
            "user": {"type": "string"},
            "tools": {"type": "array", "items": {"type": "object"}},
            "tool_choice": {"anyOf": [{"type": "string"}, {"type": "object"}, {"type": "null"}]},
            "parallel_tool_calls": {"type": "boolean"},
            "response_format": {"type": "object"},
            "presence_penalty": {"type": "number", "minimum": -2, "maximum": 2},
            "frequency_penalty": {"type": "number", "minimum": -2, "maximum": 2},
            "logit_bias": {"type": "object"},
            "budgetflow": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "strategy": {"type": "string", "description": "A strategy spec such as vote@8"},
                    "budget_tokens": {"type": "integer", "minimum": 1},
                    "answer": {"enum": ["number", "math", "text"]},
                },
            },
        },
    }


def _chat_completion() -> dict[str, Any]:
    usage = {
        "type": "object",
        "required": ["prompt_tokens", "completion_tokens", "total_tokens"],
        "properties": {
            name: {"type": "integer"} for name in ("prompt_tokens", "completion_tokens", "total_tokens")
        },
    }
    return {
        "type": "object",
        "required": ["id", "object", "created", "model", "choices", "usage"],
        "properties": {
            "id": {"type": "string"},
            "object": {"const": "chat.completion"},
            "created": {"type": "integer"},
            "model": {"type": "string"},
            "choices": {"type": "array", "items": {"type": "object"}},
            "usage": usage,
            "budgetflow": {
                "type": "object",
                "description": "How the answer was reached: strategy, samples, why it stopped, "
                "every upstream call",
            },
        },
    }


def openapi_schema() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "budgetflow",
            "version": "1",
            "description": "An OpenAI-compatible server with budgets",
        },
        "paths": {
            "/v1/chat/completions": {"post": _chat_completions_operation()},
            "/v1/models": _get(
                "listModels", "The upstream model and its strategy-prefixed names", errors=(401, 503)
            ),
            "/health": _get("health", "Serving", errors=(503,)),
            "/openapi.json": _get("openapi", "This document", errors=()),
        },
        "components": {
            "schemas": {
                "ChatCompletionRequest": _chat_request(),
                "Message": _message(),
                "ChatCompletion": _chat_completion(),
                "Error": _error_schema(),
            },
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _chat_completions_operation() -> dict[str, Any]:
    json_body = {"application/json": {"schema": {"$ref": "#/components/schemas/ChatCompletionRequest"}}}
    return {
        "operationId": "createChatCompletion",
        "requestBody": {"required": True, "content": json_body},
        "responses": {
            "200": {
                "description": "A completion (or server-sent events with stream: true)",
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/ChatCompletion"}},
                    # server-sent events: chat.completion.chunk objects, `: budgetflow
                    # progress` comments, then [DONE] (see docs/server.md)
                    "text/event-stream": {"schema": {}},
                },
            },
            **_errors(400, 401, 404, 413, 429, 502, 503, 504),
        },
    }


def _get(operation: str, description: str, *, errors: tuple[int, ...]) -> dict[str, Any]:
    """A GET operation answering a JSON object, and the error statuses it may answer instead."""
    ok = {"description": description, "content": {"application/json": {"schema": {"type": "object"}}}}
    return {"get": {"operationId": operation, "responses": {"200": ok, **_errors(*errors)}}}


def _error_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["message", "type"],
                "properties": {"message": {"type": "string"}, "type": {"type": "string"}},
            }
        },
    }
