"""`budgetflow serve` as a user runs it — a real process in front of the embedded model, and in
front of a real llama.cpp server — with the official openai SDK (sync, async, streaming) as the
client."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from openai import AsyncOpenAI, OpenAI

from budgetflow.backends.openai import OpenAICompatibleBackend
from budgetflow.server.app import ServerSettings
from budgetflow.server.keys import KeyStore
from budgetflow.testing.llama_server import LlamaServer
from budgetflow.testing.serving import serving

pytestmark = pytest.mark.integration
QUESTION = [{"role": "user", "content": "What is 3 + 4? Reply with the number."}]


class Served:
    def __init__(self, base_url: str, key: str, store: Path) -> None:
        self.base_url = base_url
        self.key = key
        self.store = store


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """`budgetflow keys create` then `budgetflow serve --upstream embedded --keys …` on a free port."""
    store = tmp_path_factory.mktemp("serve") / "keys.sqlite"
    command = [sys.executable, "-m", "budgetflow"]
    created = subprocess.run(
        [*command, "keys", "create", "tester", "--budget-tokens", "200000", "--keys", str(store)],
        capture_output=True,
        text=True,
        check=True,
    )
    key = created.stdout.strip()
    assert key.startswith("bf-")
    process = subprocess.Popen(
        [
            *command,
            "serve",
            "--upstream",
            "embedded",
            "--port",
            "0",
            "--keys",
            str(store),
            "--max-tokens",
            "24",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    line = process.stderr.readline()
    match = re.search(r"http://127\.0\.0\.1:(\d+)/v1", line)
    assert match, line
    yield Served(f"http://127.0.0.1:{match.group(1)}/v1", key, store)
    process.terminate()
    process.wait(timeout=30)


def test_sync_client_gets_a_completion_with_usage(served: Served) -> None:
    client = OpenAI(base_url=served.base_url, api_key=served.key, max_retries=0)
    reply = client.chat.completions.create(model="embedded", messages=QUESTION, temperature=0, seed=1)  # type: ignore[arg-type]
    assert reply.choices[0].message.content and reply.choices[0].message.role == "assistant"
    assert (
        reply.usage is not None and reply.usage.prompt_tokens > 5 and 0 < reply.usage.completion_tokens <= 24
    )
    again = client.chat.completions.create(model="embedded", messages=QUESTION, temperature=0, seed=1)  # type: ignore[arg-type]
    assert again.choices[0].message.content == reply.choices[0].message.content


def test_async_vote_reports_every_sample_in_usage(served: Served) -> None:
    async def body() -> None:
        client = AsyncOpenAI(base_url=served.base_url, api_key=served.key, max_retries=0)
        reply = await client.chat.completions.create(
            model="vote-4/embedded",
            messages=QUESTION,
            seed=5,
            extra_body={"budgetflow": {"answer": "number"}},  # type: ignore[arg-type]
        )
        extension = (reply.model_extra or {})["budgetflow"]
        assert extension["samples"] == 4 and extension["strategy"] == "vote@4"
        assert reply.usage is not None
        assert reply.usage.completion_tokens == sum(call["completion_tokens"] for call in extension["calls"])
        assert reply.usage.prompt_tokens == sum(call["prompt_tokens"] for call in extension["calls"])
        await client.close()

    asyncio.run(body())


def test_streaming_and_n_through_the_sdk(served: Served) -> None:
    client = OpenAI(base_url=served.base_url, api_key=served.key, max_retries=0)
    stream = client.chat.completions.create(
        model="embedded",
        messages=QUESTION,
        stream=True,
        stream_options={"include_usage": True},
        seed=2,  # type: ignore[arg-type]
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    usage = [c.usage for c in chunks if c.usage is not None]
    assert text and len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 1
    assert usage and 0 < usage[0].completion_tokens <= 24
    several = client.chat.completions.create(model="embedded", messages=QUESTION, n=3, seed=4)  # type: ignore[arg-type]
    assert len(several.choices) == 3


def test_the_embedded_model_refuses_images_and_tools_by_name(served: Served) -> None:
    client = OpenAI(base_url=served.base_url, api_key=served.key, max_retries=0)
    image = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}},
    ]
    with pytest.raises(openai.BadRequestError, match="reads text only"):
        client.chat.completions.create(model="embedded", messages=[{"role": "user", "content": image}])  # type: ignore[misc, list-item]
    with pytest.raises(openai.NotFoundError, match="not served here"):
        client.chat.completions.create(model="vote-4/gpt-4o", messages=QUESTION)  # type: ignore[arg-type]


def test_the_key_was_charged_what_the_replies_reported(served: Served) -> None:
    client = OpenAI(base_url=served.base_url, api_key=served.key, max_retries=0)
    store = KeyStore(served.store)
    key = store.authenticate(served.key)
    assert key is not None
    before = key.spent_tokens
    reply = client.chat.completions.create(model="embedded", messages=QUESTION, seed=9)  # type: ignore[arg-type]
    after = store.info(key.id)
    assert reply.usage is not None and after is not None
    assert after.spent_tokens - before == reply.usage.total_tokens and after.reserved_tokens == 0


def test_in_front_of_a_real_llama_cpp_server(llama_server: LlamaServer) -> None:
    """llama.cpp's server ignores `n`: the server fans out with distinct seeds; streaming relays
    the upstream's deltas and its reported usage."""

    async def body() -> None:
        upstream = OpenAICompatibleBackend(base_url=llama_server.base_url, model="smollm2", api_key="unused")
        async with serving(
            upstream, ServerSettings(upstream_model="smollm2", default_max_tokens=16)
        ) as base_url:
            client = AsyncOpenAI(base_url=base_url, api_key="none", max_retries=0)
            three = await client.chat.completions.create(model="smollm2", messages=QUESTION, n=3, seed=11)  # type: ignore[arg-type]
            assert len(three.choices) == 3 and three.usage is not None and three.usage.prompt_tokens > 15
            stream = await client.chat.completions.create(
                model="smollm2",
                messages=QUESTION,
                stream=True,
                stream_options={"include_usage": True},  # type: ignore[arg-type]
            )
            chunks = [chunk async for chunk in stream]
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            usage = [c.usage for c in chunks if c.usage is not None]
            assert text.strip() and usage and 0 < usage[0].completion_tokens <= 16
            voted = await client.chat.completions.create(model="vote-3/smollm2", messages=QUESTION, seed=3)  # type: ignore[arg-type]
            assert (voted.model_extra or {})["budgetflow"]["samples"] == 3
            tools = [{"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}]
            with_tools = await client.chat.completions.create(
                model="smollm2",
                messages=QUESTION,
                tools=tools,
                tool_choice="none",
                max_tokens=8,  # type: ignore[arg-type]
            )
            assert with_tools.choices[0].message.content is not None  # llama.cpp took the tools and answered
            await client.close()

    asyncio.run(body())
