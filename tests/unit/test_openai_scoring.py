"""Scoring text over HTTP: the reply's parsing and the capability probe (the real server is in
tests/integration/test_http_verifier.py)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence

import pytest

from budgetflow.backends.base import Backend, ScoredContinuations
from budgetflow.backends.openai import OpenAICompatibleBackend
from budgetflow.backends.openai_scoring import continuation_score, render_chat
from budgetflow.backends.wrappers.metered import Metered
from budgetflow.errors import ConfigError, MalformedReply
from budgetflow.events import EventStream, RequestFinished
from budgetflow.testing import StubOpenAIServer
from budgetflow.types import Message, Request, Response, Usage


def _reply(tokens: list[str], values: list[float | None], completion_tokens: int = 1) -> bytes:
    logprobs = {"tokens": tokens, "token_logprobs": values, "text_offset": list(range(len(tokens)))}
    usage = {"prompt_tokens": len(tokens) - completion_tokens, "completion_tokens": completion_tokens}
    return json.dumps({"choices": [{"text": "".join(tokens), "logprobs": logprobs}], "usage": usage}).encode()


def test_the_score_sums_the_tokens_that_carry_the_continuation() -> None:
    body = _reply(
        ["Q", ":", " 2", "+", "3", "\\n", " 5", ".", "<gen>"], [None, -1, -1, -1, -1, -1, -0.5, -0.25, -9]
    )
    score, usage = continuation_score(body, " 5.", backend="b", url="u")
    assert score == pytest.approx(-0.75)  # " 5" and ".", not the generated token, not the prompt
    assert (usage.prompt_tokens, usage.completion_tokens) == (8, 1)


def test_a_token_straddling_the_replys_start_counts_with_the_continuation() -> None:
    body = _reply(["A", "=", "\\n 5", ".", "<gen>"], [None, -1, -2, -0.5, -9])
    score, _ = continuation_score(body, " 5.", backend="b", url="u")
    assert score == pytest.approx(-2.5)


def test_replies_that_cannot_score_are_told_apart_from_malformed_ones() -> None:
    no_logprobs = json.dumps({"choices": [{"text": "x", "logprobs": None}], "usage": {}}).encode()
    with pytest.raises(ConfigError, match="no prompt log-probabilities"):
        continuation_score(no_logprobs, " 5", backend="b", url="u")
    with pytest.raises(ConfigError, match="does not echo"):
        continuation_score(_reply(["<gen>"], [-1.0]), " 5", backend="b", url="u")
    with pytest.raises(MalformedReply):
        continuation_score(b"{not json", " 5", backend="b", url="u")


def test_chat_rendering_ends_where_the_reply_begins() -> None:
    messages = (Message("system", "Be brief."), Message("user", "2 + 3"))
    assert render_chat(messages, "2 + 3 =", "chatml") == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n2 + 3<|im_end|>\n"
        "<|im_start|>assistant\n2 + 3 ="
    )
    assert render_chat(messages, "", "plain") == "Be brief.\n\n2 + 3\n\n"


def test_an_endpoint_without_text_completions_is_a_clear_error() -> None:
    async def score() -> list[float]:
        async with (
            StubOpenAIServer() as server,  # chat completions only: /v1/completions is a 404
            OpenAICompatibleBackend(base_url=server.base_url, model="stub", api_key="k") as backend,
        ):
            return await backend.score_continuations(Request.from_prompt("2 + 3"), [" 5."])

    with pytest.raises(
        ConfigError, match=r"cannot score text: POST http://127\.0\.0\.1:\d+/v1/completions.*404"
    ):
        asyncio.run(score())


def test_metered_scoring_carries_the_usage_the_endpoint_reported() -> None:
    class _Scorer(Backend):
        async def complete(self, request: Request) -> Response:
            raise NotImplementedError

        async def score_continuations(self, request: Request, continuations: Sequence[str]) -> list[float]:
            return ScoredContinuations([-1.0] * len(continuations), Usage(30, 2))

    events = EventStream()
    seen: list[object] = []
    events.subscribe(seen.append)
    metered = Metered(_Scorer(), events=events)
    assert asyncio.run(metered.score_continuations(Request.from_prompt("q"), ["a", "b"])) == [-1.0, -1.0]
    assert metered.reading.usage == Usage(30, 2)
    (finished,) = [e for e in seen if isinstance(e, RequestFinished)]
    assert finished.kind == "score" and finished.usage == Usage(30, 2)
