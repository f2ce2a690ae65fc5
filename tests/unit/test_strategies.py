from __future__ import annotations

import asyncio

import pytest

from budgetflow.backends.scripted import FunctionBackend, ScriptedBackend
from budgetflow.errors import ConfigError
from budgetflow.runtime.strategy_runner import run_strategy
from budgetflow.strategies import (
    Draw,
    Finish,
    Sample,
    Single,
    Vote,
    majority_answer,
    parse_strategy,
)
from budgetflow.types import Message, Request, SamplingParams


def _sample(answer: str | None) -> Sample:
    return Sample(text=f"Answer: {answer}", answer=answer, completion_tokens=2)


def test_majority_groups_equivalent_answers_and_breaks_ties_by_first_seen() -> None:
    assert majority_answer(["1,000", "7", "1000.0", "7"]) == ("1,000", 2)
    assert majority_answer(["5", "3", "3", "5"]) == ("5", 2)
    assert majority_answer(["3", "5", "5", "3"]) == ("3", 2)
    assert majority_answer([None, None]) == (None, 0)
    assert majority_answer([None, "2"]) == ("2", 1)


def test_single_asks_for_one_greedy_sample_then_finishes() -> None:
    policy = Single()
    assert policy.decide(()) == Draw(n=1, temperature=0.0)
    decision = policy.decide((_sample("4"),))
    assert isinstance(decision, Finish) and decision.answer == "4"


def test_vote_draws_what_is_missing_then_takes_the_majority() -> None:
    policy = Vote(n=4, temperature=0.5)
    assert policy.decide(()) == Draw(n=4, temperature=0.5)
    assert policy.decide((_sample("1"),)) == Draw(n=3, temperature=0.5)
    decision = policy.decide(tuple(_sample(a) for a in ["1", "2", "2", "3"]))
    assert isinstance(decision, Finish) and (decision.answer, decision.votes) == ("2", 2)
    assert policy.decide((_sample(None),) * 4) == Finish(
        answer=None, reason="no sample stated an answer", votes=0
    )


def test_strategies_are_pure() -> None:
    policy = Vote(n=2)
    seen = (_sample("1"), _sample("1"))
    assert policy.decide(seen) == policy.decide(seen)


def test_parse_strategy() -> None:
    assert parse_strategy("single") == Single()
    assert parse_strategy("vote@3") == Vote(n=3)
    assert parse_strategy("vote", temperature=0.2) == Vote(n=8, temperature=0.2)
    for bad in ("vote@x", "vote@0", "tree", "single@2"):
        with pytest.raises(ConfigError):
            parse_strategy(bad)


def test_run_strategy_samples_and_reports_usage() -> None:
    backend = ScriptedBackend(["Answer: 5", "Answer: 6", "Answer: 5"])
    messages = (Message("user", "two plus three"),)
    outcome = asyncio.run(run_strategy(Vote(n=3), backend, messages, sampling=SamplingParams(seed=7)))
    assert outcome.answer == "5"
    assert [s.answer for s in outcome.samples] == ["5", "6", "5"]
    assert outcome.usage.prompt_tokens == 3  # one request, its prompt counted once
    assert outcome.usage.completion_tokens == 6
    assert outcome.rounds == 1
    request = backend.requests[0]
    assert (request.n, request.sampling.temperature, request.sampling.seed) == (3, 0.5, 7)


def test_run_strategy_uses_greedy_for_single() -> None:
    backend = FunctionBackend(lambda request, index: f"Answer: {request.sampling.temperature}")
    outcome = asyncio.run(run_strategy(Single(), backend, (Message("user", "q"),), sampling=SamplingParams()))
    assert outcome.answer == "0.0"


def test_scripted_backend_applies_stop_and_max_tokens_and_raises_queued_errors() -> None:
    backend = ScriptedBackend(["one two three\nQ: next", "a b c d e", ConfigError("boom")])
    sampling = SamplingParams(stop=("\nQ:",), max_tokens=3)
    response = asyncio.run(backend.complete(Request.from_prompt("x", sampling=sampling, n=2)))
    assert response.texts == ["one two three", "a b c"]
    assert [c.finish_reason for c in response.completions] == ["stop", "length"]
    with pytest.raises(ConfigError, match="boom"):
        asyncio.run(backend.complete(Request.from_prompt("x")))
    with pytest.raises(ConfigError, match="ran out of replies"):
        asyncio.run(backend.complete(Request.from_prompt("x")))


def test_run_all_raises_the_first_failure_itself_and_cancels_the_rest() -> None:
    from budgetflow.concurrency import run_all

    finished: list[str] = []

    async def slow() -> str:
        await asyncio.sleep(5)
        finished.append("slow")
        return "slow"

    async def failing() -> str:
        await asyncio.sleep(0)
        raise ConfigError("first failure")

    async def body() -> None:
        assert await run_all([asyncio.sleep(0, "a"), asyncio.sleep(0, "b")]) == ["a", "b"]
        with pytest.raises(ConfigError, match="first failure"):
            await run_all([slow(), failing()])

    asyncio.run(body())
    assert finished == []


def test_optional_capabilities_name_the_class() -> None:
    backend = ScriptedBackend()
    with pytest.raises(NotImplementedError, match="ScriptedBackend does not count tokens"):
        asyncio.run(backend.count_tokens("x"))

    async def consume() -> None:
        async for _ in backend.stream(Request.from_prompt("x")):
            pass

    with pytest.raises(NotImplementedError, match="ScriptedBackend does not support streaming"):
        asyncio.run(consume())
