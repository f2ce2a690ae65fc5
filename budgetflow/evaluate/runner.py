"""Run a dataset through a strategy, concurrently, and summarise accuracy and spend."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

from budgetflow.backends.base import Backend
from budgetflow.budget import Budget, Price
from budgetflow.evaluate.datasets import Dataset
from budgetflow.events import EventStream, QuestionFinished, UnitFinished
from budgetflow.journal import RecordedStep
from budgetflow.runtime.context import EndpointLimits, RunContext, Unit
from budgetflow.runtime.scheduler import check_fits, run_units
from budgetflow.runtime.strategy_runner import run_strategy
from budgetflow.strategies.base import Strategy
from budgetflow.types import Question, Request, SamplingParams, Spend, Usage

__all__ = ["QuestionResult", "StrategyReport", "evaluate"]


@dataclass(frozen=True, slots=True, kw_only=True)
class QuestionResult:
    """The outcome for one question under one strategy."""

    id: str
    gold: str
    answer: str | None
    score: float
    samples: int
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    reason: str
    sample_answers: tuple[str | None, ...] = ()
    budget_exhausted: bool = False
    #: The question as asked, and every sample's raw text (for an auditor; empty where a run
    #: keeps only answers).
    question: str = ""
    completions: tuple[str, ...] = ()


@dataclass(slots=True, kw_only=True)
class StrategyReport:
    """Every question's result under one strategy, and the wall time they took together."""

    strategy: str
    dataset: str
    results: list[QuestionResult] = field(default_factory=list)
    wall_seconds: float = 0.0
    spent: Spend = field(default_factory=Spend)
    reserved_at_end: Spend = field(default_factory=Spend)
    budget: Budget | None = None
    #: On a resumed run: calls answered from the journal (not sent again), and calls that were
    #: in flight when the run stopped and were sent again (the endpoint may have billed both).
    replayed_calls: int = 0
    ambiguous_calls: int = 0
    #: The sampling temperature the run's samples were drawn at (None: the strategy's mix).
    temperature: float | None = None

    @property
    def accuracy(self) -> float:
        return sum(r.score for r in self.results) / len(self.results) if self.results else 0.0

    @property
    def prompt_tokens(self) -> int:
        return sum(r.prompt_tokens for r in self.results)

    @property
    def completion_tokens(self) -> int:
        return sum(r.completion_tokens for r in self.results)

    @property
    def questions_per_second(self) -> float:
        return len(self.results) / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def summary(self) -> dict[str, float | int | str | None]:
        return {
            "strategy": self.strategy,
            "dataset": self.dataset,
            "questions": len(self.results),
            "accuracy": round(self.accuracy, 4),
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "wall_seconds": round(self.wall_seconds, 3),
            "questions_per_second": round(self.questions_per_second, 3),
            "budget_total_tokens": self.budget.total_tokens if self.budget else None,
            "spent_total_tokens": self.spent.total_tokens,
            "budget_exhausted_questions": sum(r.budget_exhausted for r in self.results),
            "replayed_calls": self.replayed_calls,
            "ambiguous_calls": self.ambiguous_calls,
            "temperature": self.temperature,
        }


async def evaluate(
    dataset: Dataset,
    strategy: Strategy,
    backend: Backend,
    *,
    sampling: SamplingParams,
    concurrency: int = 4,
    budget: Budget | None = None,
    question_budget: Budget | None = None,
    events: EventStream | None = None,
    limits: EndpointLimits | None = None,
    prices: dict[str, Price] | None = None,
    on_result: Callable[[QuestionResult], None] | None = None,
    recorded: Mapping[tuple[str, int], RecordedStep] | None = None,
) -> StrategyReport:
    """Answer every question of `dataset` with `strategy`, `concurrency` questions at a time.

    Each question is a unit of one `RunContext`. `budget` caps the whole run, paced across the
    questions (each starts with an equal share of what is left; a budget that cannot pay one
    sample per question is refused before anything is sent), and `question_budget` each question
    (both hard); `limits` sets the endpoint's concurrency (nested calls included), rates and
    retry policy; `prices` (dollars per million tokens, by model name) let `budget.cost` be kept.
    Every token figure comes from the questions' ledgers (judges and verifiers included).
    Results are reported through `on_result` as each question finishes and returned in dataset
    order. A backend failure that retries cannot fix cancels the questions still running and
    propagates. `recorded` (a journaled run's steps) resumes that run: its finished calls are
    answered from the journal, not sent again.
    """
    context = RunContext(
        backend,
        budget=budget,
        unit_budget=question_budget,
        events=events,
        limits=limits,
        prices=prices,
        seed=sampling.seed,
        recorded=recorded,
    )
    sampling = replace(sampling, stop=sampling.stop or dataset.stop)
    await check_fits(context, [Request(messages=q.messages, sampling=sampling) for q in dataset.questions])
    report = StrategyReport(strategy=strategy.name, dataset=dataset.name, budget=budget)
    started = time.perf_counter()

    async def answer(question: Question, unit: Unit) -> QuestionResult:
        result = await _answer_one(question, dataset, strategy, unit, sampling)
        announce_finished(context, unit, strategy.name, result)
        if on_result is not None:
            on_result(result)
        return result

    report.results = await run_units(
        context, dataset.questions, answer, unit_id=lambda q: q.id, kind="question", concurrency=concurrency
    )
    report.wall_seconds = time.perf_counter() - started
    report.spent = context.ledger.spent
    report.reserved_at_end = context.ledger.reserved
    report.replayed_calls, report.ambiguous_calls = context.replayed_calls, context.ambiguous_calls
    return report


def announce_finished(context: RunContext, unit: Unit, strategy: str, result: QuestionResult) -> None:
    """`QuestionFinished` and `UnitFinished` for one question's result (its unit's spend)."""
    if not context.events.active:
        return
    usage = Usage(result.prompt_tokens, result.completion_tokens)
    context.events.emit(
        QuestionFinished(
            unit_id=unit.id,
            question_id=result.id,
            strategy=strategy,
            answer=result.answer,
            score=result.score,
            usage=usage,
        )
    )
    context.events.emit(
        UnitFinished(
            unit_id=unit.id,
            answer=result.answer,
            reason=result.reason,
            spent=unit.spent,
            starved=result.budget_exhausted,
        )
    )


async def _answer_one(
    question: Question, dataset: Dataset, strategy: Strategy, unit: Unit, sampling: SamplingParams
) -> QuestionResult:
    started = time.perf_counter()
    outcome = await run_strategy(
        strategy, unit, question.messages, sampling=sampling, extract=dataset.extract
    )
    return QuestionResult(
        id=question.id,
        gold=question.gold,
        answer=outcome.answer,
        score=await dataset.grader.grade(outcome.answer, question),
        samples=len(outcome.samples),
        prompt_tokens=outcome.usage.prompt_tokens,
        completion_tokens=outcome.usage.completion_tokens,
        seconds=time.perf_counter() - started,
        reason=outcome.reason,
        sample_answers=tuple(s.answer for s in outcome.samples),
        budget_exhausted=outcome.budget_exhausted,
        question=question.text,
        completions=tuple(s.trace for s in outcome.samples),
    )
