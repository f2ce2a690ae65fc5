"""The deadline planner live: several backends, one sample budget, one wall-clock deadline.

Each backend ("lane") has at most one request in flight. Whenever a lane is idle, the planner
(`plan_next_draw`) picks its next draw — which question, how many samples, or a greedy answer —
from the evidence pooled over all lanes, with the time left to the deadline as the lane's time
and the seconds per sample it has observed on that lane. Requests still running at the deadline
are cancelled; every question answers with what it has. With verifier-weighted votes the first
backend scores each new answer (the likelihood verifier), whichever lane drew it. All requests go
through one ledger shared by the lanes (`RunContext(ledger=...)`), so a token budget holds across
backends.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import replace

from budgetflow.allocate.deadline import DrawPlan, LaneView, plan_next_draw
from budgetflow.allocate.live import (
    Books,
    allocation_sampling,
    build_report,
    record_completion,
    sample_seed,
    verify_new_answers,
)
from budgetflow.allocate.policies import Allocator
from budgetflow.answers.extract import extract_answer
from budgetflow.backends.base import Backend
from budgetflow.budget import Budget, Ledger
from budgetflow.errors import BudgetExceeded, ConfigError
from budgetflow.evaluate.datasets import Dataset
from budgetflow.evaluate.runner import QuestionResult, StrategyReport
from budgetflow.runtime.events import EventStream
from budgetflow.runtime.executor import RunContext
from budgetflow.types import Request, SamplingParams

__all__ = ["run_planned"]


class _Lanes:
    """The lanes' contexts, per-question backends and planner views, and the shared books."""

    def __init__(
        self, dataset: Dataset, backends: list[Backend], allocator: Allocator, books: Books, ledger: Ledger
    ) -> None:
        events = ledger.events or EventStream()
        self.contexts = [RunContext(b, ledger=ledger, events=events) for b in backends]
        self.per_question: list[dict[int, Backend]] = [{} for _ in backends]
        greedy = set(range(len(dataset))) if allocator.use_greedy else set()
        self.views = [LaneView(seconds_left=0.0, has_greedy=set(greedy)) for _ in backends]
        self.dataset, self.books = dataset, books
        #: The first backend verifies every lane's answers (with verifier-weighted votes).
        self.verifier, self.verify = backends[0], allocator.voting.verifier_weight is not None

    def backend(self, lane: int, question: int) -> Backend:
        chosen = self.per_question[lane]
        if question not in chosen:
            name = f"{self.dataset.questions[question].id}@lane{lane}"
            chosen[question] = self.contexts[lane].backend_for(name)
        return chosen[question]

    def retire(self, question: int, *, greedy_only: bool) -> None:
        """No lane plans this question's greedy answer again (or, refused by the budget, anything)."""
        for view in self.views:
            view.has_greedy.discard(question)
            if not greedy_only:
                view.available[question] = 0


async def run_planned(
    dataset: Dataset,
    backends: list[Backend],
    allocator: Allocator,
    *,
    budget_samples: int,
    deadline_seconds: float,
    sampling: SamplingParams,
    temperature: float = 0.5,
    max_batch: int = 8,
    budget: Budget | None = None,
    events: EventStream | None = None,
    on_result: Callable[[QuestionResult], None] | None = None,
) -> StrategyReport:
    """Answer `dataset` with at most `budget_samples` samples over `backends` by `deadline_seconds`."""
    if not backends or budget_samples < 0 or deadline_seconds <= 0:
        raise ConfigError("run_planned needs backends, budget_samples >= 0 and deadline_seconds > 0")
    sampling = allocation_sampling(sampling, dataset, allocator)
    books = Books(len(dataset), budget_samples)
    lanes = _Lanes(dataset, backends, allocator, books, Ledger(budget, events=events, name="run"))
    started = time.perf_counter()

    def time_left() -> float:
        return max(0.0, deadline_seconds - (time.perf_counter() - started))

    running: dict[asyncio.Task[None], int] = {}
    try:
        while True:
            for lane in set(range(len(backends))) - set(running.values()):
                plan = _plan(lanes, lane, allocator, time_left(), max_batch)
                if plan is not None:
                    books.samples_left -= plan.n
                    if plan.greedy:
                        lanes.retire(plan.question, greedy_only=True)
                    running[asyncio.create_task(_draw(lanes, lane, plan, sampling, temperature))] = lane
            if not running:
                break
            done, _ = await asyncio.wait(running, timeout=time_left(), return_when=asyncio.FIRST_COMPLETED)
            if not done:  # the deadline: what is still running is cancelled below
                break
            for task in done:
                running.pop(task)
                task.result()
    finally:
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
    report = build_report(dataset, allocator, books, lanes.contexts[0], on_result)
    report.strategy = f"alloc:{allocator.name}x{len(backends)}"
    report.wall_seconds = time.perf_counter() - started
    return report


def _plan(lanes: _Lanes, lane: int, allocator: Allocator, left: float, max_batch: int) -> DrawPlan | None:
    view = lanes.views[lane]
    view.seconds_left = left
    if left <= 0 or lanes.books.samples_left <= 0:
        return None
    plan = plan_next_draw(
        lanes.books.evidence,
        [view],
        allocator=allocator,
        samples_left=lanes.books.samples_left,
        max_batch=max_batch,
    )
    return None if plan is None else replace(plan, lane=lane)


async def _draw(lanes: _Lanes, lane: int, plan: DrawPlan, sampling: SamplingParams, heat: float) -> None:
    index, books = plan.question, lanes.books
    evidence, view = books.evidence[index], lanes.views[lane]
    seed = sample_seed(sampling, index, len(evidence.answers))
    params = replace(
        sampling,
        temperature=0.0 if plan.greedy else heat,
        seed=None if seed is None else seed + 104_729 * lane,
    )
    request = Request(messages=lanes.dataset.questions[index].messages, sampling=params, n=plan.n)
    requested = time.perf_counter()
    try:
        response = await lanes.backend(lane, index).complete(request)
    except BudgetExceeded:
        books.samples_left += plan.n
        books.refused.add(index)
        lanes.retire(index, greedy_only=False)
        return
    seconds = time.perf_counter() - requested
    books.usage[index] = books.usage[index] + response.usage
    evidence.seconds += seconds
    if plan.greedy:
        view.greedy_seconds.append(seconds)
    else:
        view.observe(index, [seconds / plan.n] * plan.n)
    for completion in response.completions:
        record_completion(books, index, extract_answer(completion.text), completion, plan.greedy)
    if lanes.verify:
        await verify_new_answers(lanes.verifier, lanes.dataset, books, index)
