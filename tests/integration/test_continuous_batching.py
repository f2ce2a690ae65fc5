"""Continuous batching on the real SmolLM2-135M-Instruct model: concurrent requests share decode
steps, each keeps its own sampling, cancellation and streaming, and memory is bounded."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from budgetflow.backends.embedded import EmbeddedBackend
from budgetflow.errors import ConfigError
from budgetflow.types import Request, SamplingParams

pytestmark = pytest.mark.integration

FEW_SHOT = "Q: 3 + 5\nA: 3 + 5 = 8. Answer: 8\n\nQ: 9 - 4\nA: 9 - 4 = 5. Answer: 5\n\n"


@pytest.fixture(scope="module")
def backend(loop: asyncio.AbstractEventLoop) -> Iterator[EmbeddedBackend]:
    backend = EmbeddedBackend(threads=1, max_sequences=16, context_tokens=4096)
    assert backend.batching == "continuous"  # the default
    yield backend
    loop.run_until_complete(backend.aclose())


def _idle(backend: EmbeddedBackend) -> bool:
    stats = backend.scheduler_stats
    return stats is not None and stats.sequences_in_use == 0 and stats.cells_held == 0


def test_concurrent_requests_with_their_own_sampling_come_back_complete(
    backend: EmbeddedBackend, loop: asyncio.AbstractEventLoop
) -> None:
    requests = [
        Request.from_prompt("Count from 1 to 20.", sampling=SamplingParams(temperature=0, max_tokens=30)),
        Request.from_prompt(
            "Count from 1 to 20, separated by commas.",
            sampling=SamplingParams(temperature=0, max_tokens=60, stop=("4",)),
        ),
        Request.from_prompt(
            "Name a fruit.", sampling=SamplingParams(temperature=1.0, max_tokens=12, seed=3), n=4
        ),
        Request.from_prompt(
            "Tell a story.", sampling=SamplingParams(temperature=0.7, top_p=0.9, max_tokens=5, seed=8), n=2
        ),
        Request.from_prompt("Say hi.", sampling=SamplingParams(temperature=1.0, max_tokens=4, seed=1), n=20),
    ]
    steps_before = backend.scheduler_stats.steps if backend.scheduler_stats else 0

    async def together() -> list:
        return list(await asyncio.gather(*(backend.complete(r) for r in requests)))

    responses = loop.run_until_complete(together())
    for request, response in zip(requests, responses, strict=True):
        assert len(response.completions) == request.n
        assert response.usage.completion_tokens == sum(c.completion_tokens for c in response.completions)
        for completion in response.completions:
            assert completion.completion_tokens <= request.sampling.max_tokens
            assert completion.finish_reason in ("stop", "length")
            assert not any(stop in completion.text for stop in request.sampling.stop)
    assert responses[1].completions[0].finish_reason == "stop" and "3" in responses[1].texts[0]
    assert all(c.finish_reason == "length" and c.completion_tokens == 5 for c in responses[3].completions)
    assert len(set(responses[2].texts)) >= 2  # seeded samples differ from each other
    stats = backend.scheduler_stats
    assert stats is not None and stats.peak_samples > 4  # samples of several requests shared a step
    assert stats.steps > steps_before and _idle(backend)


def test_a_cancelled_request_stops_without_disturbing_the_others(
    backend: EmbeddedBackend, loop: asyncio.AbstractEventLoop
) -> None:
    async def body() -> tuple[int, list]:
        long = Request.from_prompt(
            "Write a very long story about the sea.",
            sampling=SamplingParams(temperature=1.0, max_tokens=1500, seed=4),
            n=2,
        )
        short = [
            Request.from_prompt(f"What is {i} + {i}?", sampling=SamplingParams(temperature=0, max_tokens=24))
            for i in range(3)
        ]
        before = backend.decoded_tokens
        victim = asyncio.create_task(backend.complete(long))
        others = asyncio.gather(*(backend.complete(r) for r in short))
        while backend.decoded_tokens - before < 40:  # noqa: ASYNC110 - polls a counter the scheduler bumps
            await asyncio.sleep(0.01)
        victim.cancel()
        with pytest.raises(asyncio.CancelledError):
            await victim
        finished = await others
        return backend.decoded_tokens - before, finished

    spent, finished = loop.run_until_complete(body())
    assert spent < 2 * 1500  # the long request stopped long before its 2 x 1500 tokens
    assert all(len(r.completions) == 1 and r.texts[0].strip() for r in finished)
    assert _idle(backend)  # its sequences and cells were freed


def test_streaming_and_scoring_share_the_scheduler(
    backend: EmbeddedBackend, loop: asyncio.AbstractEventLoop
) -> None:
    prompt = "Count from 1 to 20, separated by commas."
    request = Request.from_prompt(
        prompt, sampling=SamplingParams(temperature=0, max_tokens=40, stop=(", 7",))
    )
    scoring = Request.from_prompt("What is 7 x 6?")
    candidates = [" 42", " 41", "The answer is 42."]

    async def body() -> tuple[list[str], list[float], list[float]]:
        async def stream() -> list[str]:
            return [d async for d in backend.stream(request)]

        deltas, scores = await asyncio.gather(stream(), backend.score_continuations(scoring, candidates))
        alone = await backend.score_continuations(scoring, candidates)
        return deltas, scores, alone

    deltas, scores, alone = loop.run_until_complete(body())
    assert len(deltas) > 3 and ", 7" not in "".join(deltas) and "1" in "".join(deltas)
    serial = EmbeddedBackend(threads=1, max_sequences=16, context_tokens=4096, batching="serial")
    reference = loop.run_until_complete(serial.score_continuations(scoring, candidates))
    loop.run_until_complete(serial.aclose())
    # scoring beside a stream, or alone, gives the one-request-at-a-time path's scores up to the
    # drift batch composition causes in llama.cpp's logits (measured here: at most ~0.35 nats)
    assert scores == pytest.approx(reference, abs=0.6) and alone == pytest.approx(reference, abs=0.6)
    assert scores.index(max(scores)) == reference.index(max(reference))


def test_a_shared_prefix_is_decoded_once_across_concurrent_requests(
    backend: EmbeddedBackend, loop: asyncio.AbstractEventLoop
) -> None:
    engine_reused = backend._engine.reused_prompt_tokens if backend._engine else 0
    questions = [f"{FEW_SHOT}Q: {a} + {b}\nA:" for a, b in [(1, 2), (4, 4), (6, 1), (2, 7), (5, 3), (8, 8)]]
    sampling = SamplingParams(temperature=0, max_tokens=16, stop=("\n\n",))
    requests = [Request.from_prompt(q, sampling=sampling) for q in questions]
    prompt_tokens = loop.run_until_complete(backend.count_prompt_tokens(requests[0]))

    async def together() -> list:
        return list(await asyncio.gather(*(backend.complete(r) for r in requests)))

    responses = loop.run_until_complete(together())
    assert all(r.texts[0].strip() for r in responses)
    assert backend._engine is not None
    reused = backend._engine.reused_prompt_tokens - engine_reused
    # every request after the first takes the few-shot prefix (most of its prompt) from another
    assert reused >= (len(requests) - 1) * (prompt_tokens // 2)


def test_a_request_that_does_not_fit_waits_for_cells_instead_of_failing(
    loop: asyncio.AbstractEventLoop,
) -> None:
    small = EmbeddedBackend(threads=1, max_sequences=8, context_tokens=512)
    sampling = SamplingParams(temperature=1.0, max_tokens=200, seed=5)
    requests = [Request.from_prompt(f"Tell story number {i}.", sampling=sampling) for i in range(3)]

    async def body() -> list:
        return list(await asyncio.gather(*(small.complete(r) for r in requests)))

    try:
        responses = loop.run_until_complete(body())
        stats = small.scheduler_stats
        assert all(len(r.completions) == 1 for r in responses)
        assert stats is not None and stats.waited > 0  # 3 x (prompt + 200) cells do not fit in 512 at once
        with pytest.raises(ConfigError, match="exceeds the context"):
            loop.run_until_complete(
                small.complete(Request.from_prompt("hi", sampling=SamplingParams(max_tokens=300), n=2))
            )
    finally:
        loop.run_until_complete(small.aclose())
