from __future__ import annotations

import asyncio

import pytest

from budgetflow.backends.scripted import ScriptedBackend
from budgetflow.backends.wrappers import Budgeted, prompt_token_bound
from budgetflow.budget import Budget, Ledger, Price
from budgetflow.errors import BudgetExceeded, ConfigError, ServerError
from budgetflow.events import (
    BudgetDenied,
    BudgetReleased,
    BudgetReserved,
    BudgetSettled,
    EventLog,
    EventStream,
)
from budgetflow.types import Message, Request, SamplingParams, Spend, Usage


def test_reserve_settle_release_move_the_books() -> None:
    ledger = Ledger(Budget(total_tokens=100))
    held = ledger.reserve(Spend(10, 40, 0, 1))
    assert ledger.reserved == Spend(10, 40, 0, 1) and ledger.headroom("total_tokens") == 50
    ledger.settle(held, Spend(10, 15, 0, 1))
    assert ledger.reserved == Spend() and ledger.spent == Spend(10, 15, 0, 1)
    other = ledger.reserve(Spend(5, 5, 0, 1))
    ledger.release(other)
    assert ledger.spent.total_tokens == 25 and ledger.reserved == Spend()
    with pytest.raises(ConfigError, match="already settled"):
        ledger.release(other)


def test_a_request_that_does_not_fit_is_refused_with_the_numbers() -> None:
    ledger = Ledger(Budget(completion_tokens=100), name="run")
    ledger.settle(ledger.reserve(Spend(0, 70, 0, 1)), Spend(0, 70, 0, 1))
    with pytest.raises(
        BudgetExceeded, match=r"completion_tokens limit 100 would be exceeded \(spent 70, .* = 110\)"
    ):
        ledger.reserve(Spend(0, 40, 0, 1))
    assert ledger.reserved == Spend()  # nothing held after a refusal


def test_children_cannot_spend_beyond_their_parent() -> None:
    run = Ledger(Budget(total_tokens=100))
    question_a = run.child(Budget(total_tokens=80), name="a")
    question_b = run.child(Budget(total_tokens=80), name="b")
    question_a.reserve(Spend(0, 60, 0, 1))
    with pytest.raises(BudgetExceeded, match="'run'"):
        question_b.reserve(Spend(0, 50, 0, 1))  # fits b, not the run
    with pytest.raises(BudgetExceeded, match="'run/a'"):
        question_a.reserve(Spend(0, 30, 0, 1))  # fits the run, not a
    assert run.reserved.total_tokens == 60 and question_b.reserved == Spend()


def test_cost_limits_use_prices_exactly() -> None:
    ledger = Ledger(
        Budget(cost=0.001), prices={"m": Price(prompt_per_million=1.0, completion_per_million=2.0)}
    )
    amount = ledger.worst_case(model="m", prompt_tokens=100, max_tokens=200, n=2)  # 100 x 1e-6 + 400 x 2e-6
    assert amount.cost == pytest.approx(0.0009)
    ledger.reserve(amount)
    with pytest.raises(BudgetExceeded, match="cost limit 0.001"):
        ledger.reserve(ledger.worst_case(model="m", prompt_tokens=100, max_tokens=1, n=1))
    with pytest.raises(ConfigError, match="no price for model 'other'"):
        ledger.worst_case(model="other", prompt_tokens=1, max_tokens=1, n=1)


def test_calls_and_deadline_limits() -> None:
    now = [0.0]
    ledger = Ledger(Budget(calls=2, deadline_seconds=10), clock=lambda: now[0])
    ledger.reserve(Spend(calls=1))
    ledger.reserve(Spend(calls=1))
    with pytest.raises(BudgetExceeded, match="calls limit 2"):
        ledger.reserve(Spend(calls=1))
    fresh = Ledger(Budget(deadline_seconds=10), clock=lambda: now[0])
    assert fresh.remaining_seconds() == 10
    now[0] = 10.5
    with pytest.raises(BudgetExceeded, match="deadline_seconds"):
        fresh.reserve(Spend(calls=1))


def test_bad_budgets_are_rejected() -> None:
    with pytest.raises(ConfigError, match="total_tokens must be >= 0"):
        Budget(total_tokens=-1)


def test_ledger_movements_are_events() -> None:
    stream = EventStream()
    log = EventLog(stream)
    ledger = Ledger(Budget(total_tokens=10), events=stream)
    ledger.settle(ledger.reserve(Spend(1, 2, 0, 1)), Spend(1, 1, 0, 1))
    ledger.release(ledger.reserve(Spend(1, 1, 0, 1)))
    with pytest.raises(BudgetExceeded):
        ledger.reserve(Spend(0, 100, 0, 1))
    kinds = [type(e) for e in log.events]
    assert kinds == [BudgetReserved, BudgetSettled, BudgetReserved, BudgetReleased, BudgetDenied]


def test_budgeted_backend_reserves_worst_case_and_settles_actual() -> None:
    backend = ScriptedBackend(["Answer: 1", "Answer: 2"])
    ledger = Ledger(Budget(total_tokens=1000))
    budgeted = Budgeted(backend, ledger)
    sampling = SamplingParams(max_tokens=50)
    response = asyncio.run(budgeted.complete(Request.from_prompt("one two", sampling=sampling, n=2)))
    assert ledger.spent == Spend(response.usage.prompt_tokens, response.usage.completion_tokens, 0, 1)
    assert ledger.reserved == Spend()
    too_big = Request.from_prompt("x", sampling=SamplingParams(max_tokens=600), n=2)
    with pytest.raises(BudgetExceeded):
        asyncio.run(budgeted.complete(too_big))
    assert len(backend.requests) == 1  # the refused request was never sent


def test_budgeted_settles_error_usage_or_releases() -> None:
    backend = ScriptedBackend(
        [ServerError("boom", status=500, usage=Usage(3, 7)), ServerError("bare", status=500)]
    )
    ledger = Ledger()
    budgeted = Budgeted(backend, ledger)
    for _ in range(2):
        with pytest.raises(ServerError):
            asyncio.run(budgeted.complete(Request.from_prompt("x")))
    assert ledger.spent == Spend(3, 7, 0, 1) and ledger.reserved == Spend()


def test_prompt_bound_is_never_below_the_real_token_count() -> None:
    messages = (Message("system", "Be brief."), Message("user", "What is 12 + 30? Ünïcödé ✓"))
    bound = prompt_token_bound(messages)
    assert bound >= len("Be brief.What is 12 + 30? Ünïcödé ✓".encode()) + 2 * 8 + 16


def test_a_deadline_cancels_a_request_in_flight() -> None:
    async def slow(request: Request, index: int) -> str:
        await asyncio.sleep(30)
        return "late"

    from budgetflow.backends.scripted import FunctionBackend

    async def body() -> Ledger:
        ledger = Ledger(Budget(deadline_seconds=0.05))
        with pytest.raises(BudgetExceeded, match="deadline passed with a request in flight"):
            await Budgeted(FunctionBackend(slow), ledger).complete(Request.from_prompt("q"))
        return ledger

    ledger = asyncio.run(asyncio.wait_for(body(), timeout=10))
    assert ledger.reserved == Spend() and ledger.spent == Spend()


def test_cost_limits_price_the_served_model() -> None:
    from budgetflow.backends.openai import OpenAICompatibleBackend
    from budgetflow.testing import StubOpenAIServer

    async def body() -> Ledger:
        async with StubOpenAIServer(reply=lambda payload, index: "one two three") as server:
            backend = OpenAICompatibleBackend(base_url=server.base_url, model="small-model", api_key="k")
            ledger = Ledger(
                Budget(cost=1.0),
                prices={"small-model": Price(prompt_per_million=2, completion_per_million=4)},
            )
            async with backend:
                await Budgeted(backend, ledger).complete(
                    Request.from_prompt("a b", sampling=SamplingParams(max_tokens=5))
                )
            return ledger

    ledger = asyncio.run(body())
    assert ledger.spent.cost == pytest.approx((2 * 2 + 3 * 4) / 1e6)


def test_a_finished_units_ledger_is_freed_at_once_not_by_the_garbage_collector() -> None:
    """A ledger in a reference cycle lives until the collector runs: one per unit made the
    collector most of a long run's overhead."""
    import gc
    import weakref

    run = Ledger(Budget(total_tokens=100))
    unit = run.child(Budget(total_tokens=10), name="q1", unit_id="q1")
    unit.settle(unit.reserve(Spend(prompt_tokens=3, calls=1)), Spend(prompt_tokens=2, calls=1))
    freed = weakref.ref(unit)
    gc.disable()
    try:
        del unit
        assert freed() is None
    finally:
        gc.enable()
    assert run.spent.prompt_tokens == 2
