"""Property: spent never exceeds any limit, and settled spend equals the usage backends reported,
under random concurrency, latencies, failures, retries and cancellations (hypothesis, 1,000 runs).
A request cancelled while the endpoint works on it is billed by the endpoint at its worst case
(its prompt and every token it could have generated), and the ledger charges as much.

Latencies are counted in event-loop turns, not seconds, so the runs are deterministic."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from budgetflow.backends.base import Backend
from budgetflow.backends.wrappers import Budgeted, Retry
from budgetflow.budget import Budget, Ledger
from budgetflow.errors import BudgetExceeded, EndpointUnreachable, ServerError
from budgetflow.types import Completion, Request, Response, SamplingParams, Usage


@dataclass(frozen=True)
class Call:
    n: int
    max_tokens: int
    turns: int  # event-loop turns the call takes
    outcome: str  # "ok", "fail_with_usage", "fail_bare", "disconnect"
    used_fraction: float
    cancel_after: int | None  # cancel the task after this many turns


@dataclass
class Books:
    ledgers: list[Ledger] = field(default_factory=list)
    reported: Usage = field(default_factory=Usage)

    def check(self) -> None:
        for ledger in self.ledgers:
            for name, limit in ledger._limits.items():
                held = ledger.spent + ledger.reserved
                value = held.total_tokens if name == "total_tokens" else getattr(held, name)
                assert value <= limit, f"{ledger.name}: {name} {value} > {limit}"


class ChaosBackend(Backend):
    """Takes `turns` loop turns, then answers, fails (with or without reported usage) or drops."""

    name = "chaos"

    def __init__(self, books: Books, plan: dict[int, Call]) -> None:
        self.books = books
        self.plan = plan

    async def complete(self, request: Request) -> Response:
        call = self.plan[request.sampling.seed or 0]
        self.books.check()
        try:
            for _ in range(call.turns):
                await asyncio.sleep(0)
                self.books.check()
        except asyncio.CancelledError:  # cut off mid-generation: billed as if it had run to the end
            self.books.reported = self.books.reported + Usage(5, request.sampling.max_tokens * request.n)
            raise
        prompt = 5
        completion = int(request.sampling.max_tokens * request.n * call.used_fraction)
        usage = Usage(prompt, completion)
        if call.outcome == "fail_with_usage":
            self.books.reported = self.books.reported + usage
            raise ServerError("injected 500", status=500, usage=usage)
        if call.outcome == "fail_bare":
            raise ServerError("injected 503", status=503)
        if call.outcome == "disconnect":
            raise EndpointUnreachable("injected drop")
        self.books.reported = self.books.reported + usage
        per = completion // request.n
        completions = [Completion(text="x", completion_tokens=per) for _ in range(request.n)]
        return Response(completions=tuple(completions), usage=usage)

    async def count_prompt_tokens(self, request: Request) -> int:
        return 5


calls = st.builds(
    Call,
    n=st.integers(1, 4),
    max_tokens=st.integers(1, 60),
    turns=st.integers(0, 5),
    outcome=st.sampled_from(["ok", "ok", "ok", "fail_with_usage", "fail_bare", "disconnect"]),
    used_fraction=st.floats(0, 1),
    cancel_after=st.one_of(st.none(), st.integers(0, 6)),
)
limits = st.one_of(st.none(), st.integers(0, 400))


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    run_limit=limits,
    completion_limit=limits,
    call_limit=st.one_of(st.none(), st.integers(0, 30)),
    question_limits=st.lists(limits, min_size=1, max_size=5),
    work=st.lists(st.lists(calls, min_size=1, max_size=6), min_size=1, max_size=5),
    retries=st.integers(1, 3),
)
def test_spend_never_exceeds_limits_and_matches_reported_usage(
    run_limit: int | None,
    completion_limit: int | None,
    call_limit: int | None,
    question_limits: list[int | None],
    work: list[list[Call]],
    retries: int,
) -> None:
    books = Books()
    run = Ledger(Budget(total_tokens=run_limit, completion_tokens=completion_limit, calls=call_limit))
    books.ledgers.append(run)
    plan: dict[int, Call] = {}
    backend = ChaosBackend(books, plan)

    async def no_wait(_: float) -> None:
        await asyncio.sleep(0)

    async def question(index: int, its_calls: list[Call]) -> None:
        ledger = run.child(
            Budget(total_tokens=question_limits[index % len(question_limits)]), name=f"q{index}"
        )
        books.ledgers.append(ledger)
        stack = Retry(Budgeted(backend, ledger), max_attempts=retries, base_delay=0, sleep=no_wait)
        for number, call in enumerate(its_calls):
            seed = index * 100 + number
            plan[seed] = call
            request = Request.from_prompt(
                "q", sampling=SamplingParams(max_tokens=call.max_tokens, seed=seed), n=call.n
            )
            task = asyncio.create_task(stack.complete(request))
            if call.cancel_after is not None:
                for _ in range(call.cancel_after):
                    await asyncio.sleep(0)
                task.cancel()
            with contextlib.suppress(
                BudgetExceeded, ServerError, EndpointUnreachable, asyncio.CancelledError
            ):
                await task
            books.check()

    async def main() -> None:
        async with asyncio.TaskGroup() as group:
            for index, its_calls in enumerate(work):
                group.create_task(question(index, its_calls))

    asyncio.run(main())
    books.check()
    for ledger in books.ledgers:
        assert ledger.reserved.total_tokens == 0 and ledger.reserved.calls == 0
    assert run.spent.prompt_tokens == books.reported.prompt_tokens
    assert run.spent.completion_tokens == books.reported.completion_tokens
    assert sum(ledger.spent.total_tokens for ledger in books.ledgers[1:]) == run.spent.total_tokens
