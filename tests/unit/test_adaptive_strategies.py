from __future__ import annotations

import asyncio

import pytest

from budgetflow import run_strategy
from budgetflow.answers.grading import MatchGrader
from budgetflow.answers.voting import leader_confidence
from budgetflow.backends.scripted import FunctionBackend, ScriptedBackend
from budgetflow.budget import Budget
from budgetflow.errors import ConfigError
from budgetflow.evaluate.datasets import Dataset
from budgetflow.evaluate.runner import evaluate
from budgetflow.events import EventLog, EventStream, StrategyDecided
from budgetflow.strategies import Draw, Finish, Sample, Vote
from budgetflow.strategies.early_stop import EarlyStop, top_two_counts
from budgetflow.strategies.first_finish import FirstFinish
from budgetflow.strategies.parse import StrategyOptions, parse_strategy
from budgetflow.types import Message, Question, Request, SamplingParams


def _samples(*answers: str | None) -> tuple[Sample, ...]:
    return tuple(Sample(text=f"Answer: {a}", answer=a, completion_tokens=3) for a in answers)


def test_leader_confidence_matches_the_beta_integral() -> None:
    assert leader_confidence(0, 0) == 0.5
    assert leader_confidence(3, 0) == pytest.approx(15 / 16)
    assert leader_confidence(4, 0) == pytest.approx(31 / 32)
    assert leader_confidence(2, 2) == 0.5
    assert leader_confidence(6, 1) > leader_confidence(5, 1) > leader_confidence(5, 2)
    assert top_two_counts(["1", "1.0", "2", None]) == (2, 1)


def test_early_stop_stops_when_settled_and_caps_samples() -> None:
    policy = EarlyStop(max_samples=8, batch=2)
    assert policy.decide(()) == Draw(n=2, temperature=0.5)
    assert isinstance(policy.decide(_samples("4", "4")), Draw)  # 2-0 is not enough at 0.95
    settled = policy.decide(_samples("4", "4", "4", "4"))
    assert isinstance(settled, Finish) and settled.answer == "4" and "settled" in settled.reason
    split = _samples("1", "2", "1", "2", "1", "2", "3", "4")
    capped = policy.decide(split)
    assert isinstance(capped, Finish) and "limit" in capped.reason and capped.answer == "1"
    margin = EarlyStop(max_samples=8, rule="margin", margin=2)
    assert isinstance(margin.decide(_samples("4", "4")), Finish)
    with pytest.raises(ConfigError):
        EarlyStop(confidence=1.5)


def test_first_finish_asks_to_keep_the_first_k() -> None:
    policy = FirstFinish(n=6, k=2)
    assert policy.decide(()) == Draw(n=6, temperature=0.5, keep_first=2)
    done = policy.decide(_samples("7", "7"))
    assert isinstance(done, Finish) and done.answer == "7"
    assert policy.name == "first_finish@6k2"
    with pytest.raises(ConfigError):
        FirstFinish(n=2, k=3)


def test_scripted_first_finish_keeps_the_shortest_and_charges_the_cut_ones() -> None:
    backend = ScriptedBackend(["a b c d e f", "a b", "a b c", "a b c d e f g h"])
    response = asyncio.run(backend.complete(Request.from_prompt("q", n=4, keep_first=2)))
    assert response.texts == ["a b", "a b c"]
    assert response.usage.completion_tokens == 3 + 2 + 3 + 3  # the long ones stopped at 3 tokens


def test_parse_new_strategies() -> None:
    assert parse_strategy("first_finish@8", options=StrategyOptions(keep_first=3)) == FirstFinish(n=8, k=3)
    assert parse_strategy("early_stop@16") == EarlyStop(max_samples=16)
    assert parse_strategy(
        "early_stop@4", options=StrategyOptions(stop_rule="margin", stop_margin=2)
    ) == EarlyStop(max_samples=4, rule="margin", margin=2)


def test_budget_shrinks_draws_then_finishes_with_what_it_has() -> None:
    # each sample costs 2 completion tokens + 2 prompt tokens; the per-question budget fits 3 samples
    backend = FunctionBackend(lambda request, index: "Answer: 5")
    stream = EventStream()
    log = EventLog(stream)
    questions = tuple(
        Question(id=f"q{i}", text="x", gold="5", messages=(Message("user", "two words"),)) for i in range(3)
    )
    dataset = Dataset(name="tiny", questions=questions, grader=MatchGrader())
    report = asyncio.run(
        evaluate(
            dataset,
            Vote(n=8),
            backend,
            sampling=SamplingParams(max_tokens=2),
            question_budget=Budget(completion_tokens=7),
            events=stream,
        )
    )
    assert report.accuracy == 1.0  # starved, but each question still answers from what it drew
    for result in report.results:
        assert result.completion_tokens <= 7
        assert result.samples == 3  # 8 refused, then 4, then 2 fits, then 1
    assert report.spent.completion_tokens == sum(r.completion_tokens for r in report.results)
    finishes = [e for e in log.of_type(StrategyDecided) if e.action == "finish"]  # type: ignore[attr-defined]
    assert len(finishes) == 3


def test_a_run_budget_that_cannot_pay_one_request_per_question_is_refused_before_sending() -> None:
    backend = ScriptedBackend([])
    questions = (Question(id="q", text="x", gold="1", messages=(Message("user", "q"),)),)
    dataset = Dataset(name="tiny", questions=questions, grader=MatchGrader())
    with pytest.raises(ConfigError, match=r"run budget of 5 tokens .* 1 units: that needs \d+ tokens"):
        asyncio.run(
            evaluate(dataset, Vote(n=2), backend, sampling=SamplingParams(), budget=Budget(total_tokens=5))
        )
    assert backend.requests == []


def test_run_strategy_with_first_finish_on_a_fake() -> None:
    backend = ScriptedBackend(["long long long Answer: 1", "Answer: 2", "x y Answer: 2"])
    outcome = asyncio.run(
        run_strategy(FirstFinish(n=3, k=2), backend, (Message("user", "q"),), sampling=SamplingParams())
    )
    assert outcome.answer == "2" and len(outcome.samples) == 2
