"""The OpenAI chat-completions wire format: a request body in, budgetflow's types out, and back.

Every field is checked and an error names it (`messages[2].content[0].type`). Content parts
(text, `image_url`, `input_audio`, `video_url`) become budgetflow's parts; a message's other
fields (`tool_calls`, `tool_call_id`, `name`) and the request fields an endpoint takes verbatim
(`tools`, `tool_choice`, `response_format`, penalties) travel as JSON, untouched.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from budgetflow.backends.wrappers.budgeted import prompt_token_bound
from budgetflow.errors import ConfigError
from budgetflow.server.routing import ServedStrategy, route
from budgetflow.types import (
    AudioPart,
    Completion,
    ContentPart,
    ImagePart,
    JsonFields,
    Message,
    SamplingParams,
    TextPart,
    Usage,
    VideoPart,
)

__all__ = ["ChatRequest", "InvalidRequest", "completion_body", "parse_chat_request"]

#: Request fields passed to the upstream verbatim.
PASSTHROUGH_FIELDS: Final = (
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
)
#: Request fields read here (everything else is refused by name).
KNOWN_FIELDS: Final = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "n",
        "stop",
        "seed",
        "stream",
        "stream_options",
        "user",
        "budgetflow",
        *PASSTHROUGH_FIELDS,
    }
)
_ROLES: Final = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
    "tool": "tool",
}
_MESSAGE_FIELDS: Final = ("tool_calls", "tool_call_id", "name", "function_call")


class InvalidRequest(ConfigError):
    """A request body the server refuses (400), naming the field (`param`)."""

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True, slots=True, kw_only=True)
class ChatRequest:
    """One parsed chat-completions request."""

    served: ServedStrategy
    messages: tuple[Message, ...]
    sampling: SamplingParams
    n: int
    stream: bool
    include_usage: bool
    passthrough: JsonFields
    model: str
    #: An upper bound on the prompt's tokens (messages and verbatim fields), without a tokenizer.
    prompt_bound: int

    @property
    def uses_tools(self) -> bool:
        return any(name in ("tools", "tool_choice", "response_format") for name, _ in self.passthrough)


def parse_chat_request(body: object, *, default_max_tokens: int, max_tokens_cap: int) -> ChatRequest:
    """The request `body` asks for, or `InvalidRequest` naming the first bad field."""
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object")
    unknown = sorted(set(body) - KNOWN_FIELDS)
    if unknown:
        raise InvalidRequest(f"unknown field {unknown[0]!r}", param=unknown[0])
    try:
        served = route(body.get("model"), body.get("budgetflow"))
    except ConfigError as error:
        raise InvalidRequest(str(error), param="model") from None
    messages = _messages(body.get("messages"))
    stream = _flag(body, "stream")
    options = body.get("stream_options")
    if options is not None and not (
        isinstance(options, dict) and isinstance(options.get("include_usage", False), bool)
    ):
        raise InvalidRequest(
            "stream_options must be an object; include_usage true or false", param="stream_options"
        )
    _check_passthrough(body)
    passthrough = tuple(
        (name, json.dumps(body[name])) for name in PASSTHROUGH_FIELDS if body.get(name) is not None
    )
    return ChatRequest(
        served=served,
        messages=messages,
        sampling=_sampling(body, default_max_tokens, max_tokens_cap),
        n=_integer(body, "n", 1, low=1, high=128),
        stream=stream,
        include_usage=bool(options and options.get("include_usage")),
        passthrough=passthrough,
        model=str(body["model"]),
        prompt_bound=prompt_token_bound(messages, passthrough=passthrough),
    )


def _check_passthrough(body: dict[str, Any]) -> None:
    """The verbatim fields are passed on untouched, but only when they have their OpenAI types."""
    checks: dict[str, tuple[type | tuple[type, ...], str]] = {
        "tools": (list, "a list of tool objects"),
        "tool_choice": ((str, dict), "'none', 'auto', 'required' or an object"),
        "parallel_tool_calls": (bool, "true or false"),
        "response_format": (dict, "an object"),
        "logit_bias": (dict, "an object"),
    }
    for name, (kinds, shape) in checks.items():
        value = body.get(name)
        if value is not None and not isinstance(value, kinds):
            raise InvalidRequest(f"{name} must be {shape}", param=name)
    if any(not isinstance(tool, dict) for tool in body.get("tools") or []):
        raise InvalidRequest("tools must be a list of tool objects", param="tools")
    for name in ("presence_penalty", "frequency_penalty"):
        _number(body, name, 0.0, low=-2.0, high=2.0)


def _sampling(body: dict[str, Any], default_max_tokens: int, cap: int) -> SamplingParams:
    name = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    max_tokens = _integer(body, name, default_max_tokens, low=1, high=cap)
    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if stop is not None and not (isinstance(stop, list) and all(isinstance(s, str) and s for s in stop)):
        raise InvalidRequest("stop must be a non-empty string or a list of them", param="stop")
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise InvalidRequest("seed must be an integer", param="seed")
    return SamplingParams(
        temperature=_number(body, "temperature", 1.0, low=0.0, high=2.0),
        top_p=_number(body, "top_p", 1.0, low=1e-9, high=1.0),
        max_tokens=max_tokens,
        stop=tuple(stop or ()),
        seed=seed,
    )


def _flag(body: dict[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise InvalidRequest(f"{name} must be true or false", param=name)
    return value


def _integer(body: dict[str, Any], name: str, default: int, *, low: int, high: int) -> int:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidRequest(f"{name} must be a whole number from {low} to {high}, got {value!r}", param=name)
    return value


def _number(body: dict[str, Any], name: str, default: float, *, low: float, high: float) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise InvalidRequest(f"{name} must be a number from {low:g} to {high:g}, got {value!r}", param=name)
    return float(value)


def _messages(value: object) -> tuple[Message, ...]:
    if not isinstance(value, list) or not value:
        raise InvalidRequest("messages must be a non-empty list", param="messages")
    return tuple(_message(item, f"messages[{index}]") for index, item in enumerate(value))


def _message(item: object, where: str) -> Message:
    if not isinstance(item, dict):
        raise InvalidRequest(f"{where} must be an object", param=where)
    role = _ROLES.get(item.get("role"))  # type: ignore[arg-type]
    if role is None:
        raise InvalidRequest(f"{where}.role must be one of {', '.join(_ROLES)}", param=f"{where}.role")
    unknown = sorted(set(item) - {"role", "content", *_MESSAGE_FIELDS})
    if unknown:
        raise InvalidRequest(f"{where} has an unknown field {unknown[0]!r}", param=f"{where}.{unknown[0]}")
    _check_message_fields(item, where)
    fields = tuple((name, json.dumps(item[name])) for name in _MESSAGE_FIELDS if item.get(name) is not None)
    content = item.get("content")
    if content is None:
        if not fields:
            raise InvalidRequest(f"{where}.content is required", param=f"{where}.content")
        return Message(role, "", (*fields, ("content", "null")))  # type: ignore[arg-type]
    if isinstance(content, str):
        return Message(role, content, fields)  # type: ignore[arg-type]
    if not isinstance(content, list):
        raise InvalidRequest(f"{where}.content must be a string or a list of parts", param=f"{where}.content")
    parts = tuple(_part(part, f"{where}.content[{i}]") for i, part in enumerate(content))
    return Message(role, parts, fields)  # type: ignore[arg-type]


def _check_message_fields(item: dict[str, Any], where: str) -> None:
    for name in ("name", "tool_call_id"):
        if item.get(name) is not None and not isinstance(item[name], str):
            raise InvalidRequest(f"{where}.{name} must be a string", param=f"{where}.{name}")
    calls = item.get("tool_calls")
    if calls is not None and not (isinstance(calls, list) and all(isinstance(c, dict) for c in calls)):
        raise InvalidRequest(f"{where}.tool_calls must be a list of objects", param=f"{where}.tool_calls")


def _part(part: object, where: str) -> ContentPart:
    if not isinstance(part, dict):
        raise InvalidRequest(f"{where} must be an object", param=where)
    kind = part.get("type")
    try:
        if kind == "text" and isinstance(part["text"], str):
            return TextPart(text=part["text"])
        if kind == "image_url":
            image = part["image_url"]
            url = image if isinstance(image, str) else image["url"]
            detail = "auto" if isinstance(image, str) else image.get("detail", "auto")
            if isinstance(url, str) and detail in ("auto", "low", "high"):
                return ImagePart(url=url, detail=detail)  # type: ignore[arg-type]
        if kind == "input_audio":
            audio = part["input_audio"]
            if isinstance(audio["data"], str) and isinstance(audio["format"], str):
                return AudioPart(data=audio["data"], format=audio["format"])
        if kind == "video_url":
            video = part["video_url"]
            url = video if isinstance(video, str) else video["url"]
            if isinstance(url, str):
                return VideoPart(url=url)
    except (KeyError, TypeError):
        pass
    raise InvalidRequest(
        f"{where} must be a text, image_url, input_audio or video_url part with its fields", param=where
    )


def completion_body(
    *,
    request_id: str,
    model: str,
    choices: Sequence[Completion],
    usage: Usage,
    extension: dict[str, Any],
) -> dict[str, Any]:
    """A `chat.completion` object; `budgetflow` carries the extension (calls, samples, why it
    stopped)."""
    return {
        "id": request_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [_choice(index, completion) for index, completion in enumerate(choices)],
        "usage": usage_json(usage),
        "budgetflow": extension,
    }


def usage_json(usage: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
    }


def reply_message(completion: Completion) -> dict[str, Any]:
    """The assistant message of one choice, its verbatim fields (tool calls) included."""
    fields = {name: json.loads(value) for name, value in completion.fields}
    content: str | None = completion.text
    if not content and "tool_calls" in fields:
        content = None
    return {"role": "assistant", "content": content, **fields}


def finish_reason(completion: Completion) -> str:
    return (
        "length"
        if completion.finish_reason == "length"
        else completion.finish_reason.replace("cancelled", "stop")
    )


def _choice(index: int, completion: Completion) -> dict[str, Any]:
    return {
        "index": index,
        "message": reply_message(completion),
        "finish_reason": finish_reason(completion),
        "logprobs": None,
    }
