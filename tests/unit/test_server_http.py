"""The server end to end over HTTP on 127.0.0.1, with the official openai SDK as the client and a
stub upstream that records what it was sent: strategies, honest usage, verbatim passthrough,
streaming that streams, keys and budgets."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
from openai import AsyncOpenAI

from budgetflow.backends.openai import OpenAICompatibleBackend
from budgetflow.server.app import ServerSettings
from budgetflow.server.keys import KeyStore
from budgetflow.testing.serving import serving
from budgetflow.testing.stub_server import StubOpenAIServer

QUESTION = [{"role": "user", "content": "What is 2 + 2?"}]
Body = Callable[[AsyncOpenAI, StubOpenAIServer, str], Awaitable[None]]


def _voting_reply(payload: dict[str, Any], index: int) -> str:
    seed = int(payload.get("seed", 0))
    return f"I think. Answer: {5 if seed % 4 == 0 else 4}"


def run_served(
    body: Body,
    *,
    store: KeyStore | None = None,
    api_key: str = "none",
    stub: StubOpenAIServer | None = None,
    settings: ServerSettings | None = None,
) -> None:
    async def main() -> None:
        async with stub or StubOpenAIServer(reply=_voting_reply, max_choices=1) as upstream:
            backend = OpenAICompatibleBackend(
                base_url=upstream.base_url, model="stub", api_key="upstream-key"
            )
            async with serving(backend, settings or ServerSettings(upstream_model="stub"), store) as base_url:
                client = AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=0)
                await body(client, upstream, base_url)
                await client.close()

    asyncio.run(main())


def test_vote_usage_is_every_upstream_call_summed() -> None:
    async def body(client: AsyncOpenAI, stub: StubOpenAIServer, base_url: str) -> None:
        reply = await client.chat.completions.create(
            model="vote-8/stub", messages=QUESTION, max_tokens=20, seed=3
        )
        assert reply.choices[0].message.content == "I think. Answer: 4"
        assert reply.usage is not None
        assert stub.served_requests == 8  # the stub ignores n: fanned out, one request a sample
        assert reply.usage.prompt_tokens == stub.served_prompt_tokens
        assert reply.usage.completion_tokens == stub.served_completion_tokens
        extension = (reply.model_extra or {})["budgetflow"]
        assert extension["samples"] == 8 and extension["answer"] == "4" and extension["strategy"] == "vote@8"
        assert len({payload["seed"] for payload in stub.payloads}) == 8  # distinct seeds
        assert sum(call["completion_tokens"] for call in extension["calls"]) == reply.usage.completion_tokens

    run_served(body)


def test_single_honours_n_with_distinct_seeds_on_an_upstream_without_n() -> None:
    async def body(client: AsyncOpenAI, stub: StubOpenAIServer, base_url: str) -> None:
        reply = await client.chat.completions.create(model="stub", messages=QUESTION, n=3, seed=8)
        assert len(reply.choices) == 3 and [c.index for c in reply.choices] == [0, 1, 2]
        assert sorted(payload["seed"] for payload in stub.payloads) == [8, 9, 10]
        assert reply.usage is not None and reply.usage.total_tokens == (
            stub.served_prompt_tokens + stub.served_completion_tokens
        )

    run_served(body)


def _tool_call(payload: dict[str, Any], index: int) -> dict[str, Any]:
    if not payload.get("tools"):
        return {}
    return {
        "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "add", "arguments": "{}"}}]
    }


TOOLS = [
    {"type": "function", "function": {"name": "add", "parameters": {"type": "object", "properties": {}}}}
]


def test_tools_images_and_response_format_reach_the_upstream_verbatim() -> None:
    messages: list[Any] = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "add these"},
                {
                    "type": "image_url",
                    "image_url": {"url": "data:image/png;base64,iVBORw0K", "detail": "high"},
                },
            ],
        },
        {"role": "assistant", "content": None, "tool_calls": [_tool_call({"tools": 1}, 0)["tool_calls"][0]]},
        {"role": "tool", "tool_call_id": "call_1", "content": "3"},
    ]

    async def body(client: AsyncOpenAI, stub: StubOpenAIServer, base_url: str) -> None:
        reply = await client.chat.completions.create(
            model="single/stub",
            messages=messages,
            tools=TOOLS,  # type: ignore[arg-type]
            tool_choice="auto",
            response_format={"type": "json_object"},
        )
        sent = stub.payloads[-1]
        assert sent["messages"] == messages
        assert sent["tools"] == TOOLS and sent["tool_choice"] == "auto"
        assert sent["response_format"] == {"type": "json_object"}
        assert sent["model"] == "stub"
        choice = reply.choices[0]
        assert choice.finish_reason == "tool_calls"
        assert choice.message.tool_calls is not None and choice.message.tool_calls[0].function.name == "add"

    run_served(body, stub=StubOpenAIServer(reply=_voting_reply, message_fields=_tool_call))


def test_a_strategy_that_cannot_honour_tools_says_so() -> None:
    async def body(client: AsyncOpenAI, stub: StubOpenAIServer, base_url: str) -> None:
        with pytest.raises(openai.BadRequestError, match="cannot honour tools"):
            await client.chat.completions.create(model="vote-4/stub", messages=QUESTION, tools=TOOLS)  # type: ignore[arg-type]
        with pytest.raises(openai.BadRequestError, match="did you mean 'vote'"):
            await client.chat.completions.create(
                model="stub", messages=QUESTION, extra_body={"budgetflow": {"strategy": "vot@3"}}
            )
        with pytest.raises(openai.BadRequestError, match="unknown field 'frobnicate'"):
            await client.chat.completions.create(
                model="stub", messages=QUESTION, extra_body={"frobnicate": 1}
            )
        assert stub.served_requests == 0  # nothing was sent upstream

    run_served(body)


def test_single_streams_the_upstream_tokens_as_they_arrive() -> None:
    """The stub sends its first word, then waits for a gate the test opens only after the client
    has read that word: a server that buffered the stream would never deliver it."""
    gate = asyncio.Event()

    async def body(client: AsyncOpenAI, stub: StubOpenAIServer, base_url: str) -> None:
        stream = await client.chat.completions.create(
            model="stub", messages=QUESTION, stream=True, stream_options={"include_usage": True}
        )
        chunks = aiter(stream)
        text = ""
        while not text:
            chunk = await asyncio.wait_for(anext(chunks), timeout=30)
            text += (chunk.choices[0].delta.content or "") if chunk.choices else ""
        assert text == "I"  # the first word, while the upstream is still holding the rest
        gate.set()
        usage = None
        async for chunk in chunks:
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
            if chunk.usage is not None:
                usage = chunk.usage
        assert text == "I think. Answer: 4"
        assert usage is not None and usage.completion_tokens == stub.served_completion_tokens

    run_served(body, stub=StubOpenAIServer(reply=lambda p, i: "I think. Answer: 4", stream_gate=gate))


def test_a_streamed_strategy_reports_progress_before_its_answer() -> None:
    async def body(client: AsyncOpenAI, stub: StubOpenAIServer, base_url: str) -> None:
        payload = {"model": "vote-4/stub", "messages": QUESTION, "stream": True, "seed": 1}
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{base_url}/chat/completions", json=payload) as reply,
        ):
            assert reply.headers["Content-Type"].startswith("text/event-stream")
            lines = [line.decode().strip() async for line in reply.content if line.strip()]
        progress = [i for i, line in enumerate(lines) if line.startswith(": budgetflow progress")]
        content = [
            i
            for i, line in enumerate(lines)
            if line.startswith("data: {") and json.loads(line[6:])["choices"][0]["delta"].get("content")
        ]
        assert len(progress) >= 1 and content and max(progress) < min(content)
        assert lines[-1] == "data: [DONE]"
        answer = "".join(json.loads(lines[i][6:])["choices"][0]["delta"]["content"] for i in content)
        assert answer.endswith("Answer: 4")

    run_served(body)


def _keyed(tmp_path: Path, **budget: Any) -> tuple[KeyStore, str]:
    store = KeyStore(tmp_path / "keys.sqlite")
    return store, store.create("tester", **budget)


def test_missing_wrong_and_revoked_keys_are_401(tmp_path: Path) -> None:
    store, secret = _keyed(tmp_path, budget_tokens=10_000)

    async def body(client: AsyncOpenAI, stub: StubOpenAIServer, base_url: str) -> None:
        for bad in ("", "bf-nothing-here", secret + "x"):
            async with aiohttp.ClientSession() as session:
                headers = {"Authorization": f"Bearer {bad}"} if bad else {}
                async with session.post(
                    f"{base_url}/chat/completions",
                    json={"model": "stub", "messages": QUESTION},
                    headers=headers,
                ) as reply:
                    assert reply.status == 401
                    assert (await reply.json())["error"]["type"] == "authentication_error"
        ok = await client.chat.completions.create(model="stub", messages=QUESTION)
        assert ok.choices
        key = store.authenticate(secret)
        assert key is not None
        store.revoke(key.id)
        with pytest.raises(openai.AuthenticationError):
            await client.chat.completions.create(model="stub", messages=QUESTION)

    run_served(body, store=store, api_key=secret)


def test_an_exhausted_key_is_429_with_retry_after(tmp_path: Path) -> None:
    store, secret = _keyed(tmp_path, budget_tokens=60, period_seconds=3600)

    async def body(client: AsyncOpenAI, stub: StubOpenAIServer, base_url: str) -> None:
        reply = await client.chat.completions.create(model="stub", messages=QUESTION, max_tokens=8)
        assert reply.usage is not None
        with pytest.raises(openai.RateLimitError) as raised:
            for _ in range(20):
                await client.chat.completions.create(model="stub", messages=QUESTION, max_tokens=8)
        assert "budget cannot fit" in str(raised.value)
        assert 1 <= int(raised.value.response.headers["Retry-After"]) <= 3600

    run_served(body, store=store, api_key=secret)


def test_concurrent_requests_never_overspend_a_key(tmp_path: Path) -> None:
    """200 requests at once on a key with room for about 30: the budget holds, every refusal
    happened with less room than the request's minimum, and the key's spend equals the usage
    the clients were told."""
    store, secret = _keyed(tmp_path, budget_tokens=3_000, period_seconds=0)

    async def body(client: AsyncOpenAI, stub: StubOpenAIServer, base_url: str) -> None:
        async def one(index: int) -> tuple[int, dict[str, Any]]:
            payload = {"model": "stub", "messages": QUESTION, "max_tokens": 64, "seed": index}
            headers = {"Authorization": f"Bearer {secret}"}
            async with session.post(f"{base_url}/chat/completions", json=payload, headers=headers) as reply:
                return reply.status, await reply.json()

        async with aiohttp.ClientSession() as session:
            results = await asyncio.gather(*(one(i) for i in range(200)))
        statuses = [status for status, _ in results]
        assert set(statuses) <= {200, 429} and statuses.count(200) >= 30
        told = sum(b["usage"]["total_tokens"] for s, b in results if s == 200)
        key = store.authenticate(secret)
        assert key is not None and key.spent_tokens == told <= 3_000 and key.reserved_tokens == 0
        assert told == stub.served_prompt_tokens + stub.served_completion_tokens
        for status, reply in results:
            if status == 429:
                budget = reply["error"]["budget"]
                room = budget["budget_tokens"] - budget["spent_tokens"] - budget["reserved_tokens"]
                assert room < budget["needed_tokens"]

    run_served(body, store=store, api_key=secret)


def test_a_client_that_disconnects_cancels_the_work_and_releases_its_reservation(tmp_path: Path) -> None:
    store, secret = _keyed(tmp_path, budget_tokens=100_000)

    async def body(client: AsyncOpenAI, stub: StubOpenAIServer, base_url: str) -> None:
        stub.request_received.clear()
        call = asyncio.ensure_future(client.chat.completions.create(model="stub", messages=QUESTION))
        await asyncio.wait_for(stub.request_received.wait(), timeout=30)
        key = store.authenticate(secret)
        assert key is not None and key.reserved_tokens > 0
        call.cancel()
        for _ in range(3000):
            await asyncio.sleep(0.01)
            info = store.info(key.id)
            if info is not None and info.reserved_tokens == 0 and stub.cancelled_requests:
                break
        info = store.info(key.id)
        assert info is not None and info.reserved_tokens == 0 and info.spent_tokens == 0
        assert stub.cancelled_requests == 1  # the upstream request was stopped too

    stub = StubOpenAIServer(reply=_voting_reply, delay=60, cancel_on_disconnect=True)
    run_served(body, store=store, api_key=secret, stub=stub)


def test_upstream_failures_are_502_with_the_upstream_status() -> None:
    from budgetflow.testing.stub_server import Fault

    async def body(client: AsyncOpenAI, stub: StubOpenAIServer, base_url: str) -> None:
        stub.inject(*[Fault(status=503, body="overloaded")] * 4)
        async with aiohttp.ClientSession() as session:
            payload = {"model": "stub", "messages": QUESTION}
            async with session.post(f"{base_url}/chat/completions", json=payload) as reply:
                assert reply.status == 502
                error = (await reply.json())["error"]
        assert error["upstream_status"] == 503 and "overloaded" in error["message"]

    settings = ServerSettings(upstream_model="stub")
    run_served(body, settings=settings)


def test_models_health_and_openapi_are_served() -> None:
    async def body(client: AsyncOpenAI, stub: StubOpenAIServer, base_url: str) -> None:
        models = [model.id async for model in client.models.list()]
        assert "stub" in models and "vote-8/stub" in models
        root = base_url.removesuffix("/v1")
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{root}/health") as reply:
                assert reply.status == 200 and (await reply.json())["status"] == "ok"
            async with session.get(f"{root}/openapi.json") as reply:
                schema = await reply.json()
        assert set(schema["paths"]) == {"/v1/chat/completions", "/v1/models", "/health", "/openapi.json"}

    run_served(body)


async def _collect(stream: AsyncIterator[Any]) -> list[Any]:
    return [item async for item in stream]


def test_a_key_s_request_rate_is_enforced_with_retry_after(tmp_path: Path) -> None:
    store, secret = _keyed(tmp_path, budget_tokens=100_000, requests_per_minute=3)

    async def body(client: AsyncOpenAI, stub: StubOpenAIServer, base_url: str) -> None:
        for _ in range(3):
            await client.chat.completions.create(model="stub", messages=QUESTION, max_tokens=4)
        with pytest.raises(openai.RateLimitError, match="3 requests a minute") as raised:
            await client.chat.completions.create(model="stub", messages=QUESTION, max_tokens=4)
        assert 1 <= int(raised.value.response.headers["Retry-After"]) <= 60
        assert stub.served_requests == 3

    run_served(body, store=store, api_key=secret)


def test_a_dollar_budget_is_kept_with_the_server_s_prices(tmp_path: Path) -> None:
    from budgetflow.budget import Price

    store, secret = _keyed(tmp_path, budget_dollars=0.0005, period_seconds=0)
    prices = {"stub": Price(prompt_per_million=1.0, completion_per_million=2.0)}  # $0.000002 a token at most

    async def body(client: AsyncOpenAI, stub: StubOpenAIServer, base_url: str) -> None:
        replies = 0
        with pytest.raises(openai.RateLimitError, match="dollar budget"):
            for _ in range(100):
                await client.chat.completions.create(model="stub", messages=QUESTION, max_tokens=16)
                replies += 1
        key = store.authenticate(secret)
        assert key is not None and replies >= 1
        assert 0 < key.spent_pico <= 500_000_000  # $0.0005 in picodollars
        charged = prices["stub"].cost_pico(stub.served_prompt_tokens, stub.served_completion_tokens)
        assert key.spent_pico == charged

    run_served(
        body, store=store, api_key=secret, settings=ServerSettings(upstream_model="stub", prices=prices)
    )


def test_a_dollar_budget_without_a_price_fails_closed(tmp_path: Path) -> None:
    store, secret = _keyed(tmp_path, budget_dollars=1.0)

    async def body(client: AsyncOpenAI, stub: StubOpenAIServer, base_url: str) -> None:
        with pytest.raises(openai.InternalServerError, match="no price for 'stub'"):
            await client.chat.completions.create(model="stub", messages=QUESTION)
        assert stub.served_requests == 0

    run_served(body, store=store, api_key=secret)


def test_an_unavailable_key_store_refuses_with_503(tmp_path: Path) -> None:
    store, secret = _keyed(tmp_path, budget_tokens=1000)

    async def body(client: AsyncOpenAI, stub: StubOpenAIServer, base_url: str) -> None:
        store._db.close()  # the store's connection is gone: nothing can be checked or charged
        async with aiohttp.ClientSession() as session:
            headers = {"Authorization": f"Bearer {secret}"}
            payload = {"model": "stub", "messages": QUESTION}
            async with session.post(f"{base_url}/chat/completions", json=payload, headers=headers) as reply:
                assert reply.status == 503 and "unavailable" in (await reply.json())["error"]["message"]
            async with session.get(base_url.removesuffix("/v1") + "/health") as reply:
                assert reply.status == 503
        assert stub.served_requests == 0

    run_served(body, store=store, api_key=secret)


def test_oversized_bodies_and_bad_json_are_refused() -> None:
    async def body(client: AsyncOpenAI, stub: StubOpenAIServer, base_url: str) -> None:
        url = f"{base_url}/chat/completions"
        async with aiohttp.ClientSession() as session:
            huge = {"model": "stub", "messages": [{"role": "user", "content": "x" * 2_000_000}]}
            async with session.post(url, json=huge) as reply:
                assert reply.status == 413 and (await reply.json())["error"]["message"]
            async with session.post(
                url, data=b"{not json", headers={"Content-Type": "application/json"}
            ) as reply:
                assert reply.status == 400 and "not JSON" in (await reply.json())["error"]["message"]
        assert stub.served_requests == 0

    run_served(body, settings=ServerSettings(upstream_model="stub", body_limit_bytes=1_000_000))


def test_an_upstream_that_times_out_is_504() -> None:
    async def main() -> None:
        async with StubOpenAIServer(reply=_voting_reply, delay=5) as upstream:
            backend = OpenAICompatibleBackend(
                base_url=upstream.base_url, model="stub", api_key="x", timeout=0.2
            )
            async with (
                serving(backend, ServerSettings(upstream_model="stub")) as base_url,
                aiohttp.ClientSession() as session,
            ):
                payload = {"model": "stub", "messages": QUESTION}
                async with session.post(f"{base_url}/chat/completions", json=payload) as reply:
                    assert reply.status == 504
                    assert "did not answer in time" in (await reply.json())["error"]["message"]

    asyncio.run(main())


def test_best_of_n_usage_includes_the_judge_calls() -> None:
    async def body(client: AsyncOpenAI, stub: StubOpenAIServer, base_url: str) -> None:
        reply = await client.chat.completions.create(
            model="best_of_n-2/stub", messages=QUESTION, max_tokens=12, seed=1
        )
        assert reply.usage is not None
        assert stub.served_requests > 2  # two samples that disagree (seeds 3, 4), then the judge's calls
        assert reply.usage.prompt_tokens == stub.served_prompt_tokens
        assert reply.usage.completion_tokens == stub.served_completion_tokens
        calls = (reply.model_extra or {})["budgetflow"]["calls"]
        assert sum(c["prompt_tokens"] + c["completion_tokens"] for c in calls) == reply.usage.total_tokens

    run_served(body)
