from __future__ import annotations

import asyncio
import random
import sqlite3
from pathlib import Path

import pytest

from budgetflow.backends.base import Backend
from budgetflow.backends.scripted import FunctionBackend, ScriptedBackend
from budgetflow.backends.wrappers import (
    Cache,
    CircuitBreaker,
    ConcurrencyLimit,
    Fallback,
    Metered,
    RateLimit,
    Retry,
    TokenBucket,
)
from budgetflow.backends.wrappers.metered import LATENCY_WINDOW
from budgetflow.errors import BadRequest, CircuitOpen, EndpointUnreachable, RateLimited, ServerError
from budgetflow.events import (
    EventLog,
    EventStream,
    RequestFailed,
    RequestFinished,
    RequestStarted,
    RetryScheduled,
)
from budgetflow.types import Completion, Request, Response, SamplingParams, Usage


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def test_retry_backs_off_with_full_jitter_and_honours_retry_after() -> None:
    backend = ScriptedBackend(
        [
            ServerError("500", status=500),
            EndpointUnreachable("drop"),
            RateLimited("slow down", retry_after=7.0),
            "Answer: 1",
        ]
    )
    sleeps = Sleeps()
    stream = EventStream()
    log = EventLog(stream)
    retry = Retry(backend, max_attempts=4, base_delay=1.0, sleep=sleeps, rng=random.Random(0), events=stream)
    response = asyncio.run(retry.complete(Request.from_prompt("q")))
    assert response.texts == ["Answer: 1"]
    assert 0 <= sleeps.delays[0] <= 1.0 and 0 <= sleeps.delays[1] <= 2.0 and sleeps.delays[2] == 7.0
    assert [e.attempt for e in log.of_type(RetryScheduled)] == [2, 3, 4]  # type: ignore[attr-defined]


def test_retry_gives_up_on_non_retryable_errors_attempt_limits_and_total_time() -> None:
    sleeps = Sleeps()
    bad = ScriptedBackend([BadRequest("400", status=400), "never"])
    with pytest.raises(BadRequest):
        asyncio.run(Retry(bad, sleep=sleeps).complete(Request.from_prompt("q")))
    assert sleeps.delays == [] and bad.remaining == 1
    failing = ScriptedBackend([ServerError("500", status=500)] * 3)
    with pytest.raises(ServerError):
        asyncio.run(
            Retry(failing, max_attempts=3, base_delay=0, sleep=sleeps).complete(Request.from_prompt("q"))
        )
    assert failing.remaining == 0
    patient = ScriptedBackend([RateLimited("429", retry_after=100.0), "late"])
    with pytest.raises(RateLimited):
        asyncio.run(Retry(patient, max_total_seconds=10, sleep=sleeps).complete(Request.from_prompt("q")))


def test_token_bucket_waits_for_refill() -> None:
    now = [0.0]

    async def body() -> list[float]:
        bucket = TokenBucket(rate=10, capacity=10, clock=lambda: now[0])
        await bucket.acquire(10)
        waits: list[float] = []
        real_sleep = asyncio.sleep

        async def fake_sleep(delay: float) -> None:
            waits.append(delay)
            now[0] += delay
            await real_sleep(0)

        asyncio.sleep = fake_sleep  # type: ignore[assignment]
        try:
            await bucket.acquire(5)
        finally:
            asyncio.sleep = real_sleep
        return waits

    assert asyncio.run(body()) == [pytest.approx(0.5)]


def test_rate_limit_without_limits_passes_through() -> None:
    backend = ScriptedBackend(["a"])
    assert asyncio.run(RateLimit(backend).complete(Request.from_prompt("q"))).texts == ["a"]


def test_concurrency_limit_holds_under_many_callers() -> None:
    async def slow(request: Request, index: int) -> str:
        await asyncio.sleep(0.001)
        return "x"

    limited = ConcurrencyLimit(FunctionBackend(slow), limit=3)

    async def body() -> None:
        await asyncio.gather(*(limited.complete(Request.from_prompt("q")) for _ in range(20)))

    asyncio.run(body())
    assert limited.peak_in_flight == 3 and limited.in_flight == 0


def test_cache_keeps_samples_diverse_and_replays_them(tmp_path: Path) -> None:
    counter = iter(range(1000))
    backend = FunctionBackend(lambda request, index: f"sample {next(counter)}")
    request = Request.from_prompt("q", sampling=SamplingParams(seed=1), n=4)

    async def run_twice(path: Path) -> tuple[list[str], list[str], int, int]:
        cache = Cache(backend, path)
        first = await cache.complete(request)
        second = await cache.complete(request)  # same request, same run: four *new* samples
        await cache.aclose()
        return first.texts, second.texts, first.usage.completion_tokens, cache.misses

    first, second, tokens, misses = asyncio.run(run_twice(tmp_path / "cache.sqlite"))
    assert len(set(first + second)) == 8 and tokens > 0 and misses == 8
    calls_before = len(backend.requests)

    async def replay() -> tuple[list[str], list[str], int, int]:
        cache = Cache(backend, tmp_path / "cache.sqlite")
        again = await cache.complete(request)
        more = await cache.complete(request)
        await cache.aclose()
        return again.texts, more.texts, again.usage.total_tokens, cache.hits

    again, more, spent, hits = asyncio.run(replay())
    assert (again, more) == (first, second)  # replayed identically, in order
    assert spent == 0 and hits == 8 and len(backend.requests) == calls_before


def test_cache_asks_only_for_missing_rollouts(tmp_path: Path) -> None:
    backend = FunctionBackend(lambda request, index: f"seed {request.sampling.seed} #{index}")
    cache = Cache(backend, tmp_path / "c.sqlite")

    async def body() -> list[str]:
        await cache.complete(Request.from_prompt("q", sampling=SamplingParams(seed=5), n=2))
        cache._handed_out.clear()  # a new run of the same process
        response = await cache.complete(Request.from_prompt("q", sampling=SamplingParams(seed=5), n=3))
        return response.texts

    texts = asyncio.run(body())
    assert texts[:2] == ["seed 5 #0", "seed 5 #1"] and texts[2] == "seed 7 #0"
    assert backend.requests[-1].n == 1


def test_fallback_moves_on_after_failures() -> None:
    first = ScriptedBackend([ServerError("down", status=503)])
    second = ScriptedBackend(["from second"])
    assert asyncio.run(Fallback([first, second]).complete(Request.from_prompt("q"))).texts == ["from second"]
    with pytest.raises(EndpointUnreachable):
        asyncio.run(
            Fallback([ScriptedBackend([EndpointUnreachable("x")])]).complete(Request.from_prompt("q"))
        )


def test_circuit_breaker_opens_rests_and_probes() -> None:
    now = [0.0]
    backend = ScriptedBackend(
        [ServerError("1", status=500), ServerError("2", status=500), "probe ok", "after"]
    )
    breaker = CircuitBreaker(backend, failure_threshold=2, reset_seconds=10, clock=lambda: now[0])

    async def call() -> str:
        return (await breaker.complete(Request.from_prompt("q"))).texts[0]

    for _ in range(2):
        with pytest.raises(ServerError):
            asyncio.run(call())
    assert breaker.state == "open"
    with pytest.raises(CircuitOpen):
        asyncio.run(call())
    assert backend.remaining == 2  # nothing was sent while open
    now[0] = 11
    assert breaker.state == "half-open"
    assert asyncio.run(call()) == "probe ok"
    assert breaker.state == "closed" and asyncio.run(call()) == "after"


def test_metered_counts_and_emits_request_events() -> None:
    stream = EventStream()
    log = EventLog(stream)
    metered = Metered(ScriptedBackend(["one two", ServerError("x", status=500)]), events=stream)
    asyncio.run(metered.complete(Request.from_prompt("q")))
    with pytest.raises(ServerError):
        asyncio.run(metered.complete(Request.from_prompt("q")))
    assert metered.reading.requests == 2 and metered.reading.failures == 1
    assert metered.reading.usage.completion_tokens == 2
    assert [type(e) for e in log.events] == [RequestStarted, RequestFinished, RequestStarted, RequestFailed]


def test_a_meter_keeps_a_window_of_latencies_not_every_one() -> None:
    """A server meters millions of requests: the latencies behind `p50_seconds` are the latest
    `LATENCY_WINDOW`, so a meter's memory does not grow with the requests it has seen."""
    metered = Metered(FunctionBackend(lambda request, index: "ok"))

    async def many() -> None:
        for _ in range(LATENCY_WINDOW + 500):
            await metered.complete(Request.from_prompt("q"))

    asyncio.run(many())
    assert metered.reading.requests == LATENCY_WINDOW + 500
    assert len(metered.reading.latencies) == LATENCY_WINDOW
    assert 0 < metered.reading.p50_seconds < 1


class _ConfidentBackend(Backend):
    """Completions that carry a mean log-probability, for the cache's logprob column."""

    name = "confident"

    async def complete(self, request: Request) -> Response:
        completions = tuple(
            Completion(text=f"s{i}", completion_tokens=1, mean_logprob=-0.25 * (i + 1))
            for i in range(request.n)
        )
        return Response(completions=completions, usage=Usage(1, request.n))


def test_cache_keeps_log_probabilities_and_upgrades_an_old_database(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as old:  # the schema before mean_logprob existed
        old.execute(
            "CREATE TABLE samples (key TEXT NOT NULL, rollout INTEGER NOT NULL, text TEXT NOT NULL, "
            "finish_reason TEXT NOT NULL, completion_tokens INTEGER NOT NULL, PRIMARY KEY (key, rollout))"
        )
    request = Request.from_prompt("q", sampling=SamplingParams(seed=1, logprobs=True), n=2)

    async def once() -> list[float | None]:
        cache = Cache(_ConfidentBackend(), path)
        response = await cache.complete(request)
        await cache.aclose()
        return [c.mean_logprob for c in response.completions]

    assert asyncio.run(once()) == [-0.25, -0.5]
    assert asyncio.run(once()) == [-0.25, -0.5]  # replayed from the upgraded database
