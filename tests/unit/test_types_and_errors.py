from __future__ import annotations

from dataclasses import fields, replace

import pytest

from budgetflow.errors import (
    AuthenticationFailed,
    BadRequest,
    ConfigError,
    HTTPStatusError,
    RateLimited,
    ServerError,
    UserInputError,
    error_for_status,
)
from budgetflow.types import ImagePart, Message, Request, SamplingParams, TextPart, Usage


def test_sampling_params_reject_bad_values() -> None:
    with pytest.raises(ConfigError, match="temperature"):
        SamplingParams(temperature=-0.1)
    with pytest.raises(ConfigError, match="top_p"):
        SamplingParams(top_p=0)
    with pytest.raises(ConfigError, match="max_tokens"):
        SamplingParams(max_tokens=0)
    with pytest.raises(ConfigError, match="stop"):
        SamplingParams(stop=("",))


def test_request_needs_messages_and_positive_n() -> None:
    with pytest.raises(ConfigError, match="at least one message"):
        Request(messages=())
    with pytest.raises(ConfigError, match="n must be"):
        Request.from_prompt("hi", n=0)


def test_message_text_skips_media_parts() -> None:
    message = Message(
        "user", (TextPart(text="look: "), ImagePart(url="data:image/png;base64,AA"), TextPart(text="?"))
    )
    assert message.text == "look: ?"
    assert message.has_media
    assert not Message("user", "plain").has_media
    with pytest.raises(ConfigError, match="role"):
        Message("robot", "x")  # type: ignore[arg-type]


def test_usage_adds_up() -> None:
    total = Usage(10, 5) + Usage(3, 4)
    assert (total.prompt_tokens, total.completion_tokens, total.total_tokens) == (13, 9, 22)


@pytest.mark.parametrize(
    ("status", "kind", "retryable"),
    [
        (400, BadRequest, False),
        (404, BadRequest, False),
        (422, BadRequest, False),
        (401, AuthenticationFailed, False),
        (403, AuthenticationFailed, False),
        (429, RateLimited, True),
        (500, ServerError, True),
        (503, ServerError, True),
        (408, HTTPStatusError, True),
    ],
)
def test_errors_are_classified_by_status(status: int, kind: type[HTTPStatusError], retryable: bool) -> None:
    error = error_for_status(status, "rate limit exceeded" if status != 429 else "", backend="x")
    assert type(error) is kind
    assert error.status == status
    assert error.retryable is retryable


def test_rate_limited_carries_retry_after_and_user_errors_are_separate() -> None:
    error = error_for_status(429, "{}", backend="x", retry_after=2.5)
    assert isinstance(error, RateLimited) and error.retry_after == 2.5
    assert issubclass(ConfigError, UserInputError)
    assert not issubclass(ServerError, UserInputError)


def test_seeding_copies_keep_every_other_field() -> None:
    """`with_seed`, `for_draw` and `sent_as` (the hot path's cheap copies) must equal `replace`: a
    field added to either type later cannot be dropped silently."""
    sampling = SamplingParams(temperature=0.3, top_p=0.9, max_tokens=7, stop=("\n",), seed=1, logprobs=True)
    assert sampling.with_seed(42) == replace(sampling, seed=42)
    drawn = sampling.for_draw(temperature=0.8, max_tokens=3, stop=("END",))
    assert drawn == replace(sampling, temperature=0.8, max_tokens=3, stop=("END",))
    request = Request(
        messages=(Message("user", "hi"),),
        sampling=sampling,
        n=3,
        model="m",
        keep_first=2,
        prefill="So",
        thinking=False,
        unit_id="old",
    )
    sent = request.sent_as(sampling.with_seed(42), unit_id="q7")
    expected = replace(request, sampling=replace(sampling, seed=42), unit_id="q7")
    assert [getattr(sent, f.name) for f in fields(Request)] == [
        getattr(expected, f.name) for f in fields(Request)
    ]
