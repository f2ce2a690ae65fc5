"""The OpenAI-compatible backend against a local stub server on 127.0.0.1 (real HTTP, no model)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest

from budgetflow.backends.base import StreamTail
from budgetflow.backends.openai import OpenAICompatibleBackend
from budgetflow.errors import (
    AuthenticationFailed,
    BackendTimeout,
    BadRequest,
    ConfigError,
    EndpointUnreachable,
    MalformedReply,
    RateLimited,
    ServerError,
)
from budgetflow.testing import Fault, StubOpenAIServer
from budgetflow.types import ImagePart, Message, Request, SamplingParams, TextPart, Usage

T = TypeVar("T")


def with_server(
    test: Callable[[StubOpenAIServer, OpenAICompatibleBackend], Awaitable[T]], **server_options: Any
) -> T:
    async def body() -> T:
        async with (
            StubOpenAIServer(**server_options) as server,
            OpenAICompatibleBackend(
                base_url=server.base_url, model="stub", api_key="sk-test", timeout=2.0
            ) as backend,
        ):
            return await test(server, backend)

    return asyncio.run(body())


def test_single_completion_sends_sampling_and_reads_usage() -> None:
    async def check(server: StubOpenAIServer, backend: OpenAICompatibleBackend) -> None:
        sampling = SamplingParams(temperature=0.3, top_p=0.9, max_tokens=12, stop=("\n",), seed=5)
        response = await backend.complete(Request.from_prompt("what is two plus two", sampling=sampling))
        assert response.texts == ["Answer: 0"]
        assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (5, 2)
        payload = server.payloads[0]
        assert payload["temperature"] == 0.3 and payload["top_p"] == 0.9 and payload["max_tokens"] == 12
        assert payload["stop"] == ["\n"] and payload["seed"] == 5 and "n" not in payload

    with_server(check)


def test_n_is_sent_once_when_the_server_honours_it() -> None:
    async def check(server: StubOpenAIServer, backend: OpenAICompatibleBackend) -> None:
        response = await backend.complete(Request.from_prompt("q", n=4))
        assert response.texts == [f"Answer: {i}" for i in range(4)]
        assert len(server.payloads) == 1 and server.payloads[0]["n"] == 4
        assert backend.supports_n is True

    with_server(check)


def test_short_replies_are_detected_and_the_rest_requested_with_distinct_seeds() -> None:
    async def check(server: StubOpenAIServer, backend: OpenAICompatibleBackend) -> None:
        response = await backend.complete(Request.from_prompt("q", n=3, sampling=SamplingParams(seed=10)))
        assert len(response.completions) == 3
        assert [p["seed"] for p in server.payloads] == [10, 11, 12]
        assert backend.supports_n is False
        assert response.usage.prompt_tokens == 3  # three HTTP requests, each paid its prompt
        server.payloads.clear()
        await backend.complete(Request.from_prompt("q", n=2, sampling=SamplingParams(seed=0)))
        assert all("n" not in p for p in server.payloads) and len(server.payloads) == 2

    with_server(check, max_choices=1, reply=lambda payload, i: f"seed {payload['seed']}")


@pytest.mark.parametrize(
    ("fault", "error", "retryable"),
    [
        (Fault(status=400, body='{"error": "bad"}'), BadRequest, False),
        (Fault(status=401), AuthenticationFailed, False),
        (Fault(status=429, retry_after="3"), RateLimited, True),
        (Fault(status=503), ServerError, True),
        (Fault(body="not json"), MalformedReply, True),
        (Fault(body='{"choices": []}'), MalformedReply, True),
        (Fault(body='{"choices": [{"message": {}}], "usage": {}}'), MalformedReply, True),
        (Fault(truncate=True), MalformedReply, True),
        (Fault(delay=5.0), BackendTimeout, True),
        (Fault(drop_connection=True), EndpointUnreachable, True),
    ],
)
def test_failures_map_to_typed_errors(fault: Fault, error: type[Exception], retryable: bool) -> None:
    async def check(server: StubOpenAIServer, backend: OpenAICompatibleBackend) -> None:
        server.inject(fault)
        with pytest.raises(error) as caught:
            await backend.complete(Request.from_prompt("q"))
        assert caught.value.retryable is retryable  # type: ignore[attr-defined]
        if isinstance(caught.value, RateLimited):
            assert caught.value.retry_after == 3.0
        # the backend stays usable after a failure
        assert (await backend.complete(Request.from_prompt("q"))).texts == ["Answer: 0"]

    with_server(check)


def test_unreachable_endpoint_is_a_clear_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    async def body() -> None:
        async with OpenAICompatibleBackend(base_url=f"http://127.0.0.1:{port}/v1", model="m") as backend:
            with pytest.raises(EndpointUnreachable, match=f"cannot connect to http://127.0.0.1:{port}"):
                await backend.complete(Request.from_prompt("q"))

    asyncio.run(body())


def test_media_parts_use_the_openai_content_shapes() -> None:
    async def check(server: StubOpenAIServer, backend: OpenAICompatibleBackend) -> None:
        parts = (TextPart(text="what is this?"), ImagePart(url="data:image/png;base64,AA"))
        await backend.complete(Request(messages=(Message("user", parts),)))
        content = server.payloads[0]["messages"][0]["content"]
        assert content[0] == {"type": "text", "text": "what is this?"}
        assert content[1]["type"] == "image_url" and content[1]["image_url"]["url"].startswith("data:")

    with_server(check)


def test_bad_configuration_is_rejected() -> None:
    with pytest.raises(ConfigError, match="base_url"):
        OpenAICompatibleBackend(base_url="localhost:8000", model="m")
    with pytest.raises(ConfigError, match="timeout"):
        OpenAICompatibleBackend(base_url="http://x", model="m", timeout=0)


def test_api_key_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_KEY", "sk-from-env")
    backend = OpenAICompatibleBackend(base_url="http://127.0.0.1:1/v1", model="m", api_key_env="MY_KEY")
    assert backend._api_key == "sk-from-env"


def test_cancelling_closes_the_in_flight_request() -> None:
    async def check(server: StubOpenAIServer, backend: OpenAICompatibleBackend) -> None:
        server.inject(Fault(delay=1.5))
        task = asyncio.create_task(backend.complete(Request.from_prompt("slow")))
        await server.request_received.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # the connection was given up, and the backend still works
        assert (await backend.complete(Request.from_prompt("q"))).texts == ["Answer: 0"]

    with_server(check)


def test_streaming_yields_server_sent_deltas() -> None:
    async def check(server: StubOpenAIServer, backend: OpenAICompatibleBackend) -> None:
        deltas = [d async for d in backend.stream(Request.from_prompt("q"))]
        assert deltas[:-1] == ["the", " answer", " is", " 7"] and server.payloads[-1]["stream"] is True
        tail = deltas[-1]  # the usage the server reported, asked for with stream_options
        assert isinstance(tail, StreamTail) and tail == "" and tail.usage == Usage(1, 4)
        assert server.payloads[-1]["stream_options"] == {"include_usage": True}
        server.inject(Fault(status=429, retry_after="1"))
        with pytest.raises(RateLimited):
            _ = [d async for d in backend.stream(Request.from_prompt("q"))]
        with pytest.raises(ConfigError, match="n=1"):
            _ = [d async for d in backend.stream(Request.from_prompt("q", n=2))]

    with_server(check, reply=lambda payload, index: "the answer is 7")


@pytest.mark.parametrize(("reports_usage", "charged"), [(True, 4), (False, 20)])
def test_budgeted_streams_settle_to_reported_usage_else_conservatively(
    reports_usage: bool, charged: int
) -> None:
    from budgetflow.backends.wrappers import Budgeted
    from budgetflow.budget import Budget, Ledger

    async def check(server: StubOpenAIServer, backend: OpenAICompatibleBackend) -> None:
        ledger = Ledger(Budget(total_tokens=10_000))
        budgeted = Budgeted(backend, ledger)
        request = Request.from_prompt("q", sampling=SamplingParams(max_tokens=20))
        text = "".join([d async for d in budgeted.stream(request)])
        assert text == "the answer is 7"
        # the server's reported usage when it sends it; else, with no tokenizer here, the whole
        # reservation is charged
        assert ledger.reserved.total_tokens == 0 and ledger.spent.completion_tokens == charged

    with_server(check, reply=lambda payload, index: "the answer is 7", stream_usage=reports_usage)


def test_budget_reserves_the_prompt_per_sample_when_the_server_may_fan_out() -> None:
    from budgetflow.backends.wrappers import Budgeted
    from budgetflow.budget import Budget, Ledger

    async def check(server: StubOpenAIServer, backend: OpenAICompatibleBackend) -> None:
        ledger = Ledger(Budget(total_tokens=100_000))
        budgeted = Budgeted(backend, ledger)
        long_prompt = "word " * 60  # 60 prompt "tokens" per request at the stub
        request = Request.from_prompt(long_prompt, sampling=SamplingParams(max_tokens=4), n=8)
        held: list[int] = []
        ledger.events = None
        original = ledger.reserve

        def spy(amount):  # type: ignore[no-untyped-def]
            held.append(amount.prompt_tokens)
            return original(amount)

        ledger.reserve = spy  # type: ignore[method-assign]
        response = await budgeted.complete(request)
        assert len(response.completions) == 8
        assert response.usage.prompt_tokens == 8 * 60  # the server ignored n: eight requests
        assert held[0] >= response.usage.prompt_tokens  # and the reservation covered all eight
        assert ledger.overruns == 0

    with_server(check, max_choices=1)


def test_first_finish_races_reserve_a_prompt_per_racer() -> None:
    backend = OpenAICompatibleBackend(base_url="http://127.0.0.1:1/v1", model="m", supports_n=True)
    assert backend.prompt_copies(Request.from_prompt("q", n=4)) == 1
    assert backend.prompt_copies(Request.from_prompt("q", n=4, keep_first=2)) == 4
    unknown = OpenAICompatibleBackend(base_url="http://127.0.0.1:1/v1", model="m")
    assert unknown.prompt_copies(Request.from_prompt("q", n=3)) == 3


def test_logprobs_are_requested_only_when_asked_and_averaged_per_choice() -> None:
    async def check(server: StubOpenAIServer, backend: OpenAICompatibleBackend) -> None:
        plain = await backend.complete(Request.from_prompt("q", n=2))
        assert [c.mean_logprob for c in plain.completions] == [None, None]
        assert "logprobs" not in server.payloads[0]
        asked = await backend.complete(Request.from_prompt("q", n=2, sampling=SamplingParams(logprobs=True)))
        assert server.payloads[1]["logprobs"] is True
        # stub: "Answer: 1" is two tokens of log-probability -0.7 and -0.1
        assert [c.mean_logprob for c in asked.completions] == pytest.approx([-0.4, -0.4])

    with_server(check)


def test_malformed_logprobs_are_a_malformed_reply() -> None:
    body = (
        '{"choices": [{"message": {"content": "Answer: 1"}, "finish_reason": "stop",'
        ' "logprobs": {"content": [{"token": "x"}]}}], "usage": {"prompt_tokens": 1, "completion_tokens": 1}}'
    )

    async def check(server: StubOpenAIServer, backend: OpenAICompatibleBackend) -> None:
        server.inject(Fault(body=body))
        with pytest.raises(MalformedReply, match="malformed choice.logprobs"):
            await backend.complete(Request.from_prompt("q", sampling=SamplingParams(logprobs=True)))

    with_server(check)
