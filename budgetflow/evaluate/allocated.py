"""Allocation on a live backend: the allocator plans, the execution core does the I/O.

Every question is a unit of one `RunContext` (its own ledger under the run's, the endpoint's
shared limits, the run's seed policy and event stream). Every question first gets the allocator's
greedy answer (if it uses one) and its probe samples, one request per question; then, while the
sample budget lasts, the questions with the highest priority get one more sample each, up to
`concurrency` at a time among those within half of the best priority, and priorities are
recomputed as answers come back. `draw_for_question` is the one draw step that both this loop
and the deadline planner's lanes use; the likelihood verifier's scoring goes through the same
unit stack (reserved, rate limited, metered, in the ledger).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace

from budgetflow.allocate import Allocator
from budgetflow.answers.voting import Evidence, answer_key, final_answer
from budgetflow.backends.base import Backend
from budgetflow.budget import Budget, Price
from budgetflow.concurrency import run_all
from budgetflow.errors import BudgetExceeded, ConfigError
from budgetflow.evaluate.datasets import Dataset
from budgetflow.evaluate.runner import QuestionResult, StrategyReport, announce_finished
from budgetflow.events import AllocatorDecided, EventStream
from budgetflow.journal import RecordedStep
from budgetflow.runtime.context import EndpointLimits, RunContext, Unit
from budgetflow.strategies.verifiers import likelihood_scores
from budgetflow.types import Completion, Message, Request, SamplingParams

__all__ = ["AllocationRun", "Books", "draw_for_question", "run_allocated"]


class Books:
    """Per-question evidence and raw answers, the questions' units, and a shared sample budget."""

    def __init__(self, size: int, samples: int) -> None:
        self.evidence = [Evidence() for _ in range(size)]
        self.raw: list[dict[str, str]] = [{} for _ in range(size)]
        self.units: list[Unit | None] = [None] * size
        self.samples_left = samples
        self.refused: set[int] = set()

    def take(self, n: int) -> int:
        granted = max(0, min(n, self.samples_left))
        self.samples_left -= granted
        return granted


@dataclass(frozen=True, slots=True, kw_only=True)
class AllocationRun:
    """What one allocation run shares: the dataset, the allocator, its sampling and temperature."""

    dataset: Dataset
    allocator: Allocator
    sampling: SamplingParams
    temperature: float
    ensemble: bool = False

    @property
    def verifying(self) -> bool:
        return self.allocator.voting.verifier_weight is not None


def open_units(context: RunContext, dataset: Dataset, books: Books) -> None:
    for index, question in enumerate(dataset.questions):
        books.units[index] = context.unit(question.id, index=index, kind="allocation")


def open_books(context: RunContext, run: AllocationRun, budget_samples: int) -> Books:
    """The books of one allocation run, with a unit of `context` open for every question."""
    books = Books(len(run.dataset), budget_samples)
    open_units(context, run.dataset, books)
    return books


async def run_allocated(
    dataset: Dataset,
    backend: Backend,
    allocator: Allocator,
    *,
    budget_samples: int,
    sampling: SamplingParams,
    temperature: float = 0.5,
    concurrency: int = 4,
    budget: Budget | None = None,
    question_budget: Budget | None = None,
    limits: EndpointLimits | None = None,
    prices: dict[str, Price] | None = None,
    events: EventStream | None = None,
    on_result: Callable[[QuestionResult], None] | None = None,
    ensemble: bool = False,
    recorded: Mapping[tuple[str, int], RecordedStep] | None = None,
) -> StrategyReport:
    """Answer `dataset` with at most `budget_samples` samples in all, spent where `allocator` says.

    With `ensemble`, a question's samples rotate over its prompts (`Question.prompts`); the greedy
    answer comes from its own prompt."""
    if budget_samples < 0:
        raise ConfigError(f"budget_samples must be >= 0, got {budget_samples}")
    if concurrency < 1:
        raise ConfigError(f"concurrency must be >= 1, got {concurrency}")
    context = RunContext(
        backend,
        budget=budget,
        unit_budget=question_budget,
        limits=limits,
        prices=prices,
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
    started = time.perf_counter()
    # With a verifier, a request and the scoring of its answers run back to back: the scoring then
    # finds the question's prompt still cached (another question's request would evict it).
    back_to_back = asyncio.Lock() if run.verifying else contextlib.nullcontext()

    async def draw(index: int, n: int, heat: float, greedy: bool = False) -> None:
        async with back_to_back:
            await draw_for_question(run, books, index, n, heat=heat, greedy=greedy)

    await _spend(run, books, draw, concurrency)
    report = await build_report(run, books, context, on_result)
    report.wall_seconds = time.perf_counter() - started
    return report


async def _spend(
    run: AllocationRun, books: Books, draw: Callable[..., Awaitable[None]], concurrency: int
) -> None:
    allocator, everyone = run.allocator, range(len(run.dataset))
    if allocator.use_greedy:
        await run_all(draw(i, 1, 0.0, greedy=True) for i in everyone)
    if allocator.probe:
        await run_all(draw(i, allocator.probe, run.temperature) for i in everyone)
    if not allocator.adaptive:
        share, extra = divmod(books.samples_left, len(run.dataset))
        await run_all(draw(i, share + (i < extra), run.temperature) for i in everyone)
    else:
        await _spend_by_priority(books, allocator, draw, concurrency, run.temperature)
    if len(run.dataset):
        left = books.samples_left
        why = f"no question deserves more ({left} samples unspent)" if left else "the sample budget is spent"
        _stopped(_unit(books, 0).context, allocator, books, why)


async def draw_for_question(
    run: AllocationRun,
    books: Books,
    index: int,
    n: int,
    *,
    heat: float,
    greedy: bool = False,
    lane: int = 0,
    taken: bool = False,
) -> int:
    """The one draw step of live allocation: take up to `n` samples from the sample budget (the
    caller already did with `taken`), send them through question `index`'s unit (spread over its
    prompts with `ensemble`), record the answers, verify new ones. Returns the samples drawn; what
    the token budget refused goes back to the sample budget."""
    granted = n if taken else books.take(n)
    if not granted:
        return 0
    _decided(run, books, index, granted, greedy)
    question, drawn = run.dataset.questions[index], len(books.evidence[index].answers)
    shares = question.prompt_shares(granted, drawn) if run.ensemble and not greedy else None
    got = 0
    for messages, count in shares or [(question.messages, granted)]:
        got += await _request(run, books, index, messages, count, heat, greedy, lane)
    books.samples_left += granted - got
    return got


async def _request(
    run: AllocationRun,
    books: Books,
    index: int,
    messages: tuple[Message, ...],
    n: int,
    heat: float,
    greedy: bool,
    lane: int,
) -> int:
    unit, evidence = _unit(books, index), books.evidence[index]
    quota = None if greedy else run.allocator.quota(evidence)
    ceiling = run.sampling.max_tokens if quota is None else min(quota, run.sampling.max_tokens)
    params = replace(run.sampling, temperature=heat, max_tokens=ceiling)
    requested = time.perf_counter()
    response = await unit.draw(Request(messages=messages, sampling=params, n=n), lane=lane)
    if response is None:
        books.refused.add(index)
        return 0
    for completion in response.completions:
        cut = quota is not None and completion.finish_reason == "length"
        answer = None if cut else run.dataset.extract(completion.text)
        record_completion(books, index, answer, completion, greedy)
    if run.verifying:
        await verify_new_answers(run.dataset, books, index)
    evidence.seconds += time.perf_counter() - requested
    return len(response.completions)


def _decided(run: AllocationRun, books: Books, index: int, granted: int, greedy: bool) -> None:
    """The allocator's decision to draw, journaled under the question's unit with its reason."""
    unit = _unit(books, index)
    if not unit.context.events.active:
        return
    evidence, allocator = books.evidence[index], run.allocator
    priority = None if greedy else allocator.priority(evidence)
    if greedy:
        reason = "the greedy answer first"
    elif not allocator.adaptive:
        reason = "an equal share of the sample budget"
    elif allocator.probe and not evidence.answers:
        reason = f"a probe of {allocator.probe} samples before ranking"
    else:
        reason = f"priority {priority:.4g} after {len(evidence.answers)} samples"
    unit.context.events.emit(
        AllocatorDecided(
            unit_id=unit.id,
            allocator=run.allocator.name,
            action="draw",
            n=granted,
            priority=priority,
            samples_left=books.samples_left,
            reason=reason,
        )
    )


def _stopped(context: RunContext, allocator: Allocator, books: Books, reason: str) -> None:
    if context.events.active:
        context.events.emit(
            AllocatorDecided(
                allocator=allocator.name, action="stop", samples_left=books.samples_left, reason=reason
            )
        )


def _unit(books: Books, index: int) -> Unit:
    unit = books.units[index]
    assert unit is not None, "open_units first"
    return unit


async def _spend_by_priority(
    books: Books,
    allocator: Allocator,
    draw: Callable[..., Awaitable[None]],
    concurrency: int,
    temperature: float,
) -> None:
    while books.samples_left > 0:
        ranked = sorted(
            (i for i, e in enumerate(books.evidence) if i not in books.refused and allocator.priority(e) > 0),
            key=lambda i: -allocator.priority(books.evidence[i]),
        )
        if not ranked:
            return
        # parallel, but only among questions nearly as deserving as the best one
        best = allocator.priority(books.evidence[ranked[0]])
        close = [i for i in ranked if allocator.priority(books.evidence[i]) >= 0.5 * best]
        batch = close[: min(concurrency, books.samples_left)]
        await run_all(draw(i, 1, temperature) for i in batch)


async def verify_new_answers(dataset: Dataset, books: Books, index: int, *, lane: int = 0) -> int:
    """Score the question's answers the verifier has not scored yet (the likelihood verifier,
    prompt tokens only) through the question's unit: reserved, rate limited, metered and settled
    in its ledger like any request. Returns how many answers were scored (0 when the budget
    refused the scoring: the answers stay unscored and the vote stays unweighted)."""
    evidence = books.evidence[index]
    unscored = sorted(
        {a for a in [*evidence.answers, evidence.greedy] if a is not None} - set(evidence.scores)
    )
    if not unscored:
        return 0
    backend = _unit(books, index).journaled(lane)
    try:
        scores = await likelihood_scores(backend, dataset.statement, dataset.questions[index], unscored)
    except BudgetExceeded:
        books.refused.add(index)
        return 0
    evidence.scores.update(scores)
    return len(unscored)


def record_completion(
    books: Books, index: int, answer: str | None, completion: Completion, greedy: bool
) -> None:
    key = answer_key(answer)
    if key is not None and answer is not None:
        books.raw[index].setdefault(key, answer)
    evidence = books.evidence[index]
    evidence.tokens += completion.completion_tokens
    evidence.longest = max(evidence.longest, completion.completion_tokens)
    if greedy:
        evidence.set_greedy(key, completion.mean_logprob)
    else:
        evidence.add(key, None if answer is None else completion.mean_logprob)


def allocation_sampling(sampling: SamplingParams, dataset: Dataset, allocator: Allocator) -> SamplingParams:
    """The run's sampling: the dataset's stop strings unless given, and log-probabilities when the
    allocator weighs votes by confidence."""
    wants_logprobs = sampling.logprobs or allocator.voting.confidence_weight is not None
    return replace(sampling, stop=sampling.stop or dataset.stop, logprobs=wants_logprobs)


async def build_report(
    run: AllocationRun,
    books: Books,
    context: RunContext,
    on_result: Callable[[QuestionResult], None] | None,
) -> StrategyReport:
    """Every question's result; its tokens are what its unit's ledger settled (samples and the
    verifier's scoring alike)."""
    report = StrategyReport(strategy=f"alloc:{run.allocator.name}", dataset=run.dataset.name)
    for index in range(len(run.dataset)):
        result = await _result(run, books, index)
        report.results.append(result)
        announce_finished(context, _unit(books, index), report.strategy, result)
        if on_result is not None:
            on_result(result)
    report.spent = context.ledger.spent
    report.reserved_at_end = context.ledger.reserved
    report.replayed_calls, report.ambiguous_calls = context.replayed_calls, context.ambiguous_calls
    return report


async def _result(run: AllocationRun, books: Books, index: int) -> QuestionResult:
    question, evidence, unit = run.dataset.questions[index], books.evidence[index], _unit(books, index)
    key = final_answer(evidence, run.allocator.voting)
    answer = None if key is None else books.raw[index].get(key, key)
    return QuestionResult(
        id=question.id,
        gold=question.gold,
        answer=answer,
        score=await run.dataset.grader.grade(answer, question),
        samples=len(evidence.answers) + evidence.used_greedy,
        prompt_tokens=unit.usage.prompt_tokens,
        completion_tokens=unit.usage.completion_tokens,
        seconds=evidence.seconds,
        reason=f"{run.allocator.name} allocation",
        sample_answers=tuple(evidence.answers),
        budget_exhausted=not evidence.answers and not evidence.used_greedy,
        question=question.text,
    )
