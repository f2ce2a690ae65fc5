"""The OpenAI-compatible backend against a real llama.cpp server on 127.0.0.1."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from budgetflow.backends.base import StreamTail
from budgetflow.backends.openai import OpenAICompatibleBackend
from budgetflow.errors import BadRequest, EndpointUnreachable
from budgetflow.testing.llama_server import LlamaServer, start_llama_server, stop_llama_server
from budgetflow.types import Request, Response, SamplingParams

pytestmark = pytest.mark.integration


def _backend(server: LlamaServer) -> OpenAICompatibleBackend:
    return OpenAICompatibleBackend(base_url=server.base_url, model="smollm2", api_key="unused", timeout=120)


def test_single_completion_with_server_usage(llama_server: LlamaServer) -> None:
    async def body() -> None:
        async with _backend(llama_server) as backend:
            sampling = SamplingParams(temperature=0, max_tokens=16)
            response = await backend.complete(Request.from_prompt("What is 2 + 3?", sampling=sampling))
            again = await backend.complete(Request.from_prompt("What is 2 + 3?", sampling=sampling))
        assert len(response.completions) == 1 and response.completions[0].text.strip()
        assert response.usage.prompt_tokens > 5 and 0 < response.usage.completion_tokens <= 16
        assert again.texts == response.texts  # greedy is deterministic

    asyncio.run(body())


def test_n4_is_never_passed_on_short(llama_server: LlamaServer) -> None:
    async def body() -> None:
        async with _backend(llama_server) as backend:
            sampling = SamplingParams(temperature=1.0, max_tokens=12, seed=3)
            response = await backend.complete(Request.from_prompt("Name a colour.", sampling=sampling, n=4))
            assert len(response.completions) == 4
            assert backend.supports_n is False  # llama.cpp returned one choice for n=4
            assert len(set(response.texts)) >= 2  # distinct seeds give distinct samples
            total = sum(c.completion_tokens for c in response.completions)
            assert response.usage.completion_tokens == total
            assert response.usage.prompt_tokens > 0

    asyncio.run(body())


def test_stop_strings(llama_server: LlamaServer) -> None:
    async def body() -> None:
        async with _backend(llama_server) as backend:
            sampling = SamplingParams(temperature=0, max_tokens=40, stop=("3",))
            prompt = "Count from 1 to 10, separated by commas."
            response = await backend.complete(Request.from_prompt(prompt, sampling=sampling))
        text = response.completions[0].text
        assert "1" in text and "3" not in text and "4" not in text

    asyncio.run(body())


def test_a_4xx_reply_is_a_typed_error(llama_server: LlamaServer) -> None:
    async def body() -> None:
        async with _backend(llama_server) as backend:
            with pytest.raises(BadRequest) as caught:
                await backend.complete(
                    Request.from_prompt("word " * 3000, sampling=SamplingParams(max_tokens=8))
                )
        assert caught.value.status == 400
        assert "context" in caught.value.body

    asyncio.run(body())


def test_server_killed_mid_request(model_path: Path, tmp_path: Path) -> None:
    server = start_llama_server(model_path, tmp_path / "server.log")
    try:

        async def body() -> None:
            async with _backend(server) as backend:
                sampling = SamplingParams(temperature=1.0, max_tokens=1500)
                request = Request.from_prompt("Write a very long story about the sea.", sampling=sampling)
                pending = asyncio.create_task(backend.complete(request))
                await asyncio.sleep(1.0)
                assert not pending.done()
                server.process.kill()
                with pytest.raises(EndpointUnreachable, match="dropped|cannot connect"):
                    await pending

        asyncio.run(body())
    finally:
        stop_llama_server(server)


def test_streaming_from_a_real_server(llama_server: LlamaServer) -> None:
    async def body() -> tuple[list[str], Response]:
        async with _backend(llama_server) as backend:
            request = Request.from_prompt(
                "Name three colours.", sampling=SamplingParams(temperature=0, max_tokens=24)
            )
            deltas = [d async for d in backend.stream(request)]
            whole = await backend.complete(request)
        return deltas, whole

    deltas, whole = asyncio.run(body())
    text = "".join(deltas)
    assert len(deltas) > 3 and text.strip()
    # llama-cpp-python 0.3.36's server ignores stream_options.include_usage: no StreamTail, so a
    # budget settles such a stream conservatively (the whole max_tokens)
    assert not any(isinstance(delta, StreamTail) for delta in deltas)
    assert whole.usage.prompt_tokens > 5
    # Not asserted: text == whole.texts[0]. The second request finds its prompt in the server's
    # cache and decodes only the rest, and llama.cpp's batched kernels round differently from its
    # one-token ones on some CPUs (AVX2-only EPYC): greedy decoding can part after a few tokens.


def test_log_probabilities_from_a_real_server(llama_server: LlamaServer) -> None:
    prompt = "Q: 3 + 5\nA: 3 + 5 = 8. Answer: 8\n\nQ: 4 + 2\nA:"
    greedy_request = Request.from_prompt(
        prompt, sampling=SamplingParams(temperature=0, max_tokens=12, logprobs=True)
    )
    hot_request = Request.from_prompt(
        prompt, sampling=SamplingParams(temperature=1.5, max_tokens=12, seed=4, logprobs=True), n=4
    )

    async def body() -> tuple[Response, Response]:
        async with _backend(llama_server) as backend:
            return await backend.complete(greedy_request), await backend.complete(hot_request)

    greedy, hot = asyncio.run(body())
    greedy_logprob = greedy.completions[0].mean_logprob
    hot_logprobs = [c.mean_logprob for c in hot.completions]
    assert greedy_logprob is not None and greedy_logprob <= 0
    assert len(hot_logprobs) == 4 and all(v is not None and v <= 0 for v in hot_logprobs)
    assert greedy_logprob > sum(v for v in hot_logprobs if v is not None) / 4
