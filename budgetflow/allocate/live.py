"""Allocation on a live backend: the allocator plans, this loop does the I/O.

Every question first gets the allocator's greedy answer (if it uses one) and its probe samples,
one request per question; then, while the sample budget lasts, the questions with the highest
priority get one more sample each, up to `concurrency` at a time among those within half of the
best priority, and priorities are recomputed
as answers come back. All requests go through the run's ledger and event stream (`RunContext`),
so a token budget, retries and metering apply as for any strategy.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace

from budgetflow.allocate.policies import Allocator, Evidence, answer_key, final_answer
from budgetflow.allocate.verify import likelihood_scores, statement_texts
from budgetflow.answers.extract import extract_answer
from budgetflow.backends.base import Backend
from budgetflow.budget import Budget, Price
from budgetflow.concurrency import run_all
from budgetflow.errors import BudgetExceeded, ConfigError
from budgetflow.evaluate.datasets import Dataset
from budgetflow.evaluate.runner import QuestionResult, StrategyReport
from budgetflow.runtime.events import EventStream, QuestionFinished
from budgetflow.runtime.executor import EndpointLimits, RunContext
from budgetflow.types import Completion, Message, Request, SamplingParams, Usage

__all__ = ["run_allocated"]


class Books:
    """Per-question evidence, raw answers, usage and a shared sample budget."""

    def __init__(self, size: int, samples: int) -> None:
        self.evidence = [Evidence() for _ in range(size)]
        self.raw: list[dict[str, str]] = [{} for _ in range(size)]
        self.usage = [Usage() for _ in range(size)]
        self.samples_left = samples
        self.refused: set[int] = set()

    def take(self, n: int) -> int:
        granted = max(0, min(n, self.samples_left))
        self.samples_left -= granted
        return granted


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
    limits: EndpointLimits | None = None,
    prices: dict[str, Price] | None = None,
    events: EventStream | None = None,
    on_result: Callable[[QuestionResult], None] | None = None,
    ensemble: bool = False,
) -> StrategyReport:
    """Answer `dataset` with at most `budget_samples` samples in all, spent where `allocator` says.

    With `ensemble`, a question's samples rotate over its prompts (`Question.prompts`); the greedy
    answer comes from its own prompt."""
    if budget_samples < 0:
        raise ConfigError(f"budget_samples must be >= 0, got {budget_samples}")
    context = RunContext(backend, budget=budget, limits=limits, prices=prices, events=events)
    backends = [context.backend_for(q.id) for q in dataset.questions]
    sampling = allocation_sampling(sampling, dataset, allocator)
    books = Books(len(dataset), budget_samples)
    started = time.perf_counter()

    async def draw(index: int, n: int, heat: float, greedy: bool = False) -> None:
        granted = books.take(n)
        if not granted:
            return
        question, drawn = dataset.questions[index], len(books.evidence[index].answers)
        shares = question.prompt_shares(granted, drawn) if ensemble and not greedy else None
        for messages, count in shares or [(question.messages, granted)]:
            await _request(index, messages, count, heat, greedy)

    # With a verifier, a request and the scoring of its answers run back to back: the scoring then
    # finds the question's prompt still cached (another question's request would evict it).
    verifying = allocator.voting.verifier_weight is not None
    back_to_back = asyncio.Lock() if verifying else contextlib.nullcontext()

    async def _request(index: int, messages: tuple[Message, ...], n: int, heat: float, greedy: bool) -> None:
        evidence = books.evidence[index]
        quota = None if greedy else allocator.quota(evidence)
        params = replace(
            sampling,
            temperature=heat,
            seed=sample_seed(sampling, index, len(evidence.answers)),
            max_tokens=quota or sampling.max_tokens,
        )
        async with back_to_back:
            requested = time.perf_counter()  # after any wait for the lock: seconds are the question's own
            try:
                response = await backends[index].complete(Request(messages=messages, sampling=params, n=n))
            except BudgetExceeded:
                books.samples_left += n
                books.refused.add(index)
                return
            books.usage[index] = books.usage[index] + response.usage
            for completion in response.completions:
                cut = quota is not None and completion.finish_reason == "length"
                answer = None if cut else extract_answer(completion.text)
                record_completion(books, index, answer, completion, greedy)
            if verifying:
                await verify_new_answers(backend, dataset, books, index)
        evidence.seconds += time.perf_counter() - requested

    everyone = range(len(dataset))
    if allocator.use_greedy:
        await run_all(draw(i, 1, 0.0, greedy=True) for i in everyone)
    if allocator.probe:
        await run_all(draw(i, allocator.probe, temperature) for i in everyone)
    if not allocator.adaptive:
        share, extra = divmod(books.samples_left, len(dataset))
        await run_all(draw(i, share + (i < extra), temperature) for i in everyone)
    else:
        await _spend_by_priority(books, allocator, draw, concurrency, temperature)
    report = build_report(dataset, allocator, books, context, on_result)
    report.wall_seconds = time.perf_counter() - started
    return report


async def _spend_by_priority(
    books: Books,
    allocator: Allocator,
    draw: Callable[[int, int, float], Awaitable[None]],
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


async def verify_new_answers(backend: Backend, dataset: Dataset, books: Books, index: int) -> int:
    """Score the question's answers the verifier has not scored yet (the likelihood verifier on
    `backend`, prompt tokens only) and add the tokens it scored (the statements; the question's
    prompt is the one its samples just cached) to the question's prompt usage — not charged to the
    run's ledger. Returns those tokens. Its time is the question's."""
    evidence = books.evidence[index]
    unscored = sorted(
        {a for a in [*evidence.answers, evidence.greedy] if a is not None} - set(evidence.scores)
    )
    if not unscored:
        return 0
    evidence.scores.update(await likelihood_scores(backend, dataset, dataset.questions[index], unscored))
    try:
        tokens = sum(backend.count_tokens(text) for text in statement_texts(dataset, unscored))
    except NotImplementedError:
        return 0
    books.usage[index] = books.usage[index] + Usage(prompt_tokens=tokens)
    return tokens


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


def sample_seed(sampling: SamplingParams, index: int, drawn: int) -> int | None:
    return None if sampling.seed is None else sampling.seed + 7919 * index + 1000 * drawn


def build_report(
    dataset: Dataset,
    allocator: Allocator,
    books: Books,
    context: RunContext,
    on_result: Callable[[QuestionResult], None] | None,
) -> StrategyReport:
    report = StrategyReport(strategy=f"alloc:{allocator.name}", dataset=dataset.name)
    for index, question in enumerate(dataset.questions):
        key = final_answer(books.evidence[index], allocator.voting)
        answer = None if key is None else books.raw[index].get(key, key)
        evidence = books.evidence[index]
        result = QuestionResult(
            id=question.id,
            gold=question.gold,
            answer=answer,
            score=dataset.grader.grade(answer, question),
            samples=len(evidence.answers) + evidence.used_greedy,
            prompt_tokens=books.usage[index].prompt_tokens,
            completion_tokens=books.usage[index].completion_tokens,
            seconds=0.0,
            reason=f"{allocator.name} allocation",
            sample_answers=tuple(evidence.answers),
            budget_exhausted=not evidence.answers and not evidence.used_greedy,
        )
        report.results.append(result)
        if context.events.active:
            usage = books.usage[index]
            context.events.emit(
                QuestionFinished(
                    question_id=question.id,
                    strategy=report.strategy,
                    answer=answer,
                    score=result.score,
                    usage=usage,
                )
            )
        if on_result is not None:
            on_result(result)
    report.spent = context.ledger.spent
    report.reserved_at_end = context.ledger.reserved
    return report
