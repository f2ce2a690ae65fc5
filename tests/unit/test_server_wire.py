"""The server's request parsing: strategies by model name, OptiLLM slugs, extra_body options,
and field-by-field validation that names the field."""

from __future__ import annotations

import json
from typing import Any

import pytest

from budgetflow.errors import ConfigError
from budgetflow.server.routing import route
from budgetflow.server.wire import InvalidRequest, parse_chat_request
from budgetflow.types import ImagePart, TextPart


@pytest.mark.parametrize(
    ("model", "spec", "upstream"),
    [
        ("vote-8/embedded", "vote@8", "embedded"),
        ("early_stop-16/qwen", "early_stop@16", "qwen"),
        ("best_of_n-4/org/model", "best_of_n@4", "org/model"),
        ("single/embedded", "single", "embedded"),
        ("adaptive/embedded", "early_stop@16", "embedded"),
        ("embedded", "single", "embedded"),
        ("meta-llama/Llama-3-8B", "single", "meta-llama/Llama-3-8B"),
        ("self_consistency-gpt-4o-mini", "vote@5", "gpt-4o-mini"),
        ("bon-gpt-4o-mini", "best_of_n@3", "gpt-4o-mini"),
        ("none-gpt-4o-mini", "single", "gpt-4o-mini"),
        ("gpt-4o-mini", "single", "gpt-4o-mini"),
    ],
)
def test_model_names_route_to_strategies(model: str, spec: str, upstream: str) -> None:
    served = route(model)
    assert (served.spec, served.upstream_model) == (spec, upstream)


def test_optillm_approaches_without_an_equivalent_are_refused_with_the_alternatives() -> None:
    with pytest.raises(ConfigError, match=r"'moa' approach has no budgetflow equivalent.*self_consistency-"):
        route("moa-gpt-4o-mini")


@pytest.mark.parametrize(
    ("model", "options", "message"),
    [
        ("vote-x/embedded", None, "whole number"),
        ("embedded", {"strategy": "vot@8"}, "did you mean 'vote'"),
        ("embedded", {"strategi": "vote@8"}, "unknown budgetflow option 'strategi'"),
        ("embedded", {"budget_tokens": 0}, "budget_tokens must be a whole number >= 1"),
        ("embedded", {"answer": "essay"}, "answer must be one of number, math, text"),
        ("embedded", "vote", "'budgetflow' must be an object"),
        ("", None, "non-empty string"),
    ],
)
def test_bad_strategies_and_options_are_refused_by_name(model: str, options: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        route(model, options)


def test_extra_body_overrides_the_prefix() -> None:
    served = route("vote-8/embedded", {"strategy": "early_stop@4", "budget_tokens": 900, "answer": "number"})
    assert (served.spec, served.budget_tokens, served.answer) == ("early_stop@4", 900, "number")


def _parse(**body: Any) -> Any:
    base: dict[str, Any] = {"model": "embedded", "messages": [{"role": "user", "content": "hi"}]}
    return parse_chat_request({**base, **body}, default_max_tokens=64, max_tokens_cap=1000)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user"}]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": [{"type": "picture"}]}]}, "messages[0].content[0]"),
        ({"messages": [{"role": "user", "content": "x", "colour": 1}]}, "messages[0].colour"),
        ({"temperature": 3}, "temperature"),
        ({"temperature": "hot"}, "temperature"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": 5000}, "max_tokens"),
        ({"n": 0}, "n"),
        ({"stop": [""]}, "stop"),
        ({"seed": 1.5}, "seed"),
        ({"stream": "yes"}, "stream"),
        ({"frobnicate": True}, "frobnicate"),
        ({"model": "nonsense-8/embedded", "budgetflow": {"strategy": "nope"}}, "model"),
    ],
)
def test_bad_fields_are_refused_naming_the_field(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        _parse(**body)
    assert raised.value.param == param


def test_content_parts_tools_and_message_fields_are_kept() -> None:
    tools = [{"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}]
    call = [{"id": "c1", "type": "function", "function": {"name": "add", "arguments": "{}"}}]
    chat = _parse(
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this?"},
                    {
                        "type": "image_url",
                        "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"},
                    },
                ],
            },
            {"role": "assistant", "content": None, "tool_calls": call},
            {"role": "tool", "content": "3", "tool_call_id": "c1"},
        ],
        tools=tools,
        tool_choice="auto",
        response_format={"type": "json_object"},
        max_completion_tokens=30,
    )
    first, second, third = chat.messages
    assert first.content == (
        TextPart(text="what is this?"),
        ImagePart(url="data:image/png;base64,AAAA", detail="low"),
    )
    assert json.loads(dict(second.fields)["tool_calls"]) == call
    assert dict(second.fields)["content"] == "null"
    assert dict(third.fields) == {"tool_call_id": '"c1"'}
    assert {name: json.loads(value) for name, value in chat.passthrough} == {
        "tools": tools,
        "tool_choice": "auto",
        "response_format": {"type": "json_object"},
    }
    assert chat.uses_tools
    assert chat.sampling.max_tokens == 30


def test_defaults_fill_what_the_request_leaves_out() -> None:
    chat = _parse(stop="###", stream=True, stream_options={"include_usage": True})
    assert chat.sampling.max_tokens == 64
    assert chat.sampling.stop == ("###",)
    assert chat.stream and chat.include_usage and chat.n == 1
