"""The deadline planner live: several backends, one sample budget, one wall-clock deadline.

Each backend ("lane") is an endpoint of one `RunContext` (the run's ledger, prices, rate and
concurrency limits, retry policy and seed policy hold across all of them) and has at most one
request in flight. Whenever a lane is idle, the planner (`plan_next_draw`) picks its next draw —
which question, how many samples, or a greedy answer — from the evidence pooled over all lanes,
with the time left to the deadline as the lane's time and the seconds per sample it has observed
on that lane. Draws go through `draw_for_question`, the same draw step as `run_allocated`, inside
one task group; requests still running at the deadline are cancelled (their spend settles in the
ledger); every question answers with what it has. With verifier-weighted votes the first backend
scores each new answer (the likelihood verifier), whichever lane drew it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import replace

from budgetflow.allocate import Allocator
from budgetflow.allocate.deadline import DrawPlan, LaneView, plan_next_draw
from budgetflow.backends.base import Backend
from budgetflow.budget import Budget, Price
from budgetflow.errors import ConfigError
from budgetflow.evaluate.allocated import (
    AllocationRun,
    Books,
    allocation_sampling,
    build_report,
    draw_for_question,
    open_books,
)
from budgetflow.evaluate.datasets import Dataset
from budgetflow.evaluate.runner import QuestionResult, StrategyReport
from budgetflow.events import EventStream
from budgetflow.journal import RecordedStep
from budgetflow.runtime.context import EndpointLimits, RunContext
from budgetflow.types import SamplingParams

__all__ = ["run_planned"]


class _Lanes:
    """The planner's view of each lane, and the shared books."""

    def __init__(self, run: AllocationRun, lanes: int, books: Books) -> None:
        greedy = set(range(len(run.dataset))) if run.allocator.use_greedy else set()
        self.views = [LaneView(seconds_left=0.0, has_greedy=set(greedy)) for _ in range(lanes)]
        self.run, self.books = run, books

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
    question_budget: Budget | None = None,
    limits: EndpointLimits | None = None,
    prices: dict[str, Price] | None = None,
    events: EventStream | None = None,
    ensemble: bool = False,
    on_result: Callable[[QuestionResult], None] | None = None,
    recorded: Mapping[tuple[str, int], RecordedStep] | None = None,
) -> StrategyReport:
    """Answer `dataset` with at most `budget_samples` samples over `backends` by `deadline_seconds`.
    With `recorded` (a journaled run's steps), a step the journal holds is answered from it; as
    the plan depends on the clock, a resumed run that plans differently stops with a journal
    mismatch naming the step instead of re-running it."""
    if not backends or budget_samples < 0 or deadline_seconds <= 0:
        raise ConfigError("run_planned needs backends, budget_samples >= 0 and deadline_seconds > 0")
    context = RunContext(
        backends[0],
        lanes=tuple(backends[1:]),
        budget=budget,
        unit_budget=question_budget,
        prices=prices,
        limits=limits,
        events=events,
        seed=sampling.seed,
        recorded=recorded,
    )
    run = AllocationRun(
        dataset=dataset,
        allocator=allocator,
        sampling=allocation_sampling(sampling, dataset, allocator),
        temperature=temperature,
        ensemble=ensemble,
    )
    books = open_books(context, run, budget_samples)
    lanes = _Lanes(run, len(backends), books)
    started = time.perf_counter()
    await _run_lanes(lanes, lambda: max(0.0, deadline_seconds - (time.perf_counter() - started)), max_batch)
    report = await build_report(run, books, context, on_result)
    report.strategy = f"alloc:{allocator.name}x{len(backends)}"
    report.wall_seconds = time.perf_counter() - started
    return report


async def _run_lanes(lanes: _Lanes, time_left: Callable[[], float], max_batch: int) -> None:
    """Keep every lane busy with the planner's next draw until the deadline or nothing is left;
    at the deadline, cancel what is still running."""
    idle: asyncio.Queue[int] = asyncio.Queue()
    running: dict[int, asyncio.Task[None]] = {}
    async with asyncio.TaskGroup() as group:
        while True:
            for lane in sorted(set(range(len(lanes.views))) - set(running)):
                plan = _plan(lanes, lane, time_left(), max_batch)
                if plan is not None:
                    task = group.create_task(_draw(lanes, lane, plan))
                    task.add_done_callback(_notify(idle, lane))
                    running[lane] = task
            if not running:
                return
            try:
                finished = await asyncio.wait_for(idle.get(), timeout=time_left())
            except TimeoutError:  # the deadline: cancel what is still running
                for task in running.values():
                    task.cancel()
                return
            running.pop(finished)


def _notify(idle: asyncio.Queue[int], lane: int) -> Callable[[asyncio.Task[None]], None]:
    return lambda _: idle.put_nowait(lane)


def _plan(lanes: _Lanes, lane: int, left: float, max_batch: int) -> DrawPlan | None:
    view, books = lanes.views[lane], lanes.books
    view.seconds_left = left
    if left <= 0 or books.samples_left <= 0:
        return None
    plan = plan_next_draw(
        books.evidence,
        [view],
        allocator=lanes.run.allocator,
        samples_left=books.samples_left,
        max_batch=max_batch,
    )
    if plan is None:
        return None
    books.take(plan.n)  # at planning time: the next lane plans with what is left
    if plan.greedy:
        lanes.retire(plan.question, greedy_only=True)
    return replace(plan, lane=lane)


async def _draw(lanes: _Lanes, lane: int, plan: DrawPlan) -> None:
    index, books, view = plan.question, lanes.books, lanes.views[lane]
    heat = 0.0 if plan.greedy else lanes.run.temperature
    requested = time.perf_counter()
    got = await draw_for_question(
        lanes.run, books, index, plan.n, heat=heat, greedy=plan.greedy, lane=lane, taken=True
    )
    seconds = time.perf_counter() - requested
    if not got:
        lanes.retire(index, greedy_only=False)
        return
    if plan.greedy:
        view.greedy_seconds.append(seconds)
    else:
        view.observe(index, [seconds / got] * got)
