"""Property over whole runs, through the public run paths (`evaluate`, `run_allocated`): the run
never spends past its caps, and what its ledger settled equals what the backend reported plus the
conservative charges (first-finish racers and requests cancelled mid-generation, verifier
scoring without a tokenizer) — with prefill-heavy strategies (prune, beam), judges
(best_of_n), first-finish races, early stopping, allocators with and without a likelihood
verifier, failures and retries.

Hypothesis generates 2,000 runs (1,000 per path). Latencies are event-loop turns: deterministic."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from budgetflow.allocate import make_allocator
from budgetflow.answers import MatchGrader
from budgetflow.backends.base import Backend
from budgetflow.backends.wrappers.budgeted import prompt_token_bound, request_prompt_bound
from budgetflow.budget import Budget
from budgetflow.errors import BackendError, ServerError
from budgetflow.evaluate.allocated import run_allocated
from budgetflow.evaluate.datasets import Dataset
from budgetflow.evaluate.runner import StrategyReport, evaluate
from budgetflow.events import BudgetReleased, BudgetReserved, BudgetSettled, Event, EventStream
from budgetflow.runtime.context import EndpointLimits, RetryPolicy
from budgetflow.strategies.parse import parse_strategy
from budgetflow.types import Completion, Message, Question, Request, Response, SamplingParams, Spend, Usage

STRATEGIES = ["single", "vote@4", "first_finish@4", "early_stop@6", "best_of_n@3", "prune@4", "beam@2"]
ALLOCATORS = ["uniform", "difficulty", "online", "early_stop"]


@dataclass
class Books:
    """What the backend billed: reported usage, and the conservative charges it could not report."""

    reported: Usage = field(default_factory=Usage)
    conservative: Usage = field(default_factory=Usage)
    calls: int = 0

    @property
    def billed(self) -> Usage:
        return self.reported + self.conservative


class ChaosBackend(Backend):
    """Answers after a few loop turns with a random mix of answers and lengths; sometimes fails
    with usage (billed) or without (not billed). Like an OpenAI-compatible endpoint it races
    first-finish requests one request per sample (the cancelled racers are unreported and charged
    their prompt and `max_tokens`), and with `fans_out` (a server that ignores `n`) sends every
    request's samples separately, each paying the prompt. It scores without a tokenizer."""

    name = "chaos"

    def __init__(self, books: Books, rng: random.Random, failure_rate: float, *, fans_out: bool) -> None:
        self.books = books
        self.rng = rng
        self.failure_rate = failure_rate
        self.fans_out = fans_out

    def prompt_copies(self, request: Request) -> int:
        return request.n if request.keep_first is not None or self.fans_out else 1

    async def complete(self, request: Request) -> Response:
        self.books.calls += 1
        try:
            for _ in range(self.rng.randint(0, 3)):
                await asyncio.sleep(0)
        except asyncio.CancelledError:  # cut off mid-generation (a sibling failed): billed at worst
            worst = Usage(
                request_prompt_bound(request) * self.prompt_copies(request),
                request.sampling.max_tokens * request.n,
            )
            self.books.conservative = self.books.conservative + worst
            raise
        prompt = self.rng.randint(1, request_prompt_bound(request))
        copies = self.prompt_copies(request)
        lengths = [self.rng.randint(1, request.sampling.max_tokens) for _ in range(request.n)]
        if self.rng.random() < self.failure_rate:
            if self.rng.random() < 0.5:
                usage = Usage(prompt * copies, sum(lengths) // 2)
                self.books.reported = self.books.reported + usage
                raise ServerError("injected 500 after generating", status=500, usage=usage)
            raise ServerError("injected 503", status=503)
        completions = [self._completion(length) for length in lengths]
        kept, unreported = request.n, Usage()
        if request.keep_first is not None and request.keep_first < request.n:
            kept = request.keep_first
            completions = completions[:kept]
            cancelled = request.n - kept
            unreported = Usage(prompt * cancelled, request.sampling.max_tokens * cancelled)
        usage = Usage(prompt * (kept if copies > 1 else 1), sum(c.completion_tokens for c in completions))
        self.books.reported = self.books.reported + usage
        self.books.conservative = self.books.conservative + unreported
        return Response(completions=tuple(completions), usage=usage, unreported=unreported)

    def _completion(self, length: int) -> Completion:
        answer = self.rng.choice(["1", "1", "2", "3"])
        text = " ".join(["w"] * (length - 1) + [f"Answer: {answer}"]) if length > 1 else f"Answer: {answer}"
        return Completion(text=text, completion_tokens=length, mean_logprob=-self.rng.random())

    async def score_continuations(self, request: Request, continuations: Sequence[str]) -> list[float]:
        for _ in range(self.rng.randint(0, 2)):
            await asyncio.sleep(0)
        # no tokenizer: the ledger charges the byte bound of the prompt and of every continuation
        charged = request_prompt_bound(request) + sum(
            prompt_token_bound((), prefill=t) for t in continuations
        )
        self.books.conservative = self.books.conservative + Usage(charged, 0)
        return [-self.rng.random() * 3 for _ in continuations]


def _dataset(size: int) -> Dataset:
    questions = tuple(
        Question(id=f"q{i}", text=f"{i}", gold="1", messages=(Message("user", f"what is {i} - {i} + 1?"),))
        for i in range(size)
    )
    return Dataset(name="chaos", questions=questions, grader=MatchGrader())


class LedgerReplay:
    """Replays the ledger's events as they are emitted and checks, after every movement, that
    what the run and each question hold (spent + reserved) is within their caps — so a run that
    ends in an error is checked too."""

    def __init__(self, events: EventStream, budget: Budget, question_budget: Budget | None) -> None:
        self.budget = budget
        self.question_budget = question_budget
        self.held: dict[str, Spend] = {}
        self.spent = Spend()
        self.open: set[int] = set()
        events.subscribe(self)

    def __call__(self, event: Event) -> None:
        if isinstance(event, BudgetReserved):
            self._move(event.ledger, event.amount)
            self.open.add(event.reservation_id)
        elif isinstance(event, BudgetSettled):
            self._move(event.ledger, event.actual - event.reserved)
            self.spent = self.spent + event.actual
            self.open.remove(event.reservation_id)
        elif isinstance(event, BudgetReleased):
            self._move(event.ledger, Spend() - event.amount)
            self.open.remove(event.reservation_id)

    def _move(self, ledger: str, change: Spend) -> None:
        self.held[ledger] = self.held.get(ledger, Spend()) + change
        _within(sum(self.held.values(), Spend()), self.budget)
        if self.question_budget is not None and ledger != "run":
            _within(self.held[ledger], self.question_budget)


def _within(held: Spend, budget: Budget) -> None:
    if budget.total_tokens is not None:
        assert held.total_tokens <= budget.total_tokens, (held, budget)
    if budget.completion_tokens is not None:
        assert held.completion_tokens <= budget.completion_tokens, (held, budget)


def _check_books(replay: LedgerReplay, books: Books) -> None:
    assert not replay.open, "every reservation is settled or released"
    assert replay.spent.prompt_tokens == books.billed.prompt_tokens
    assert replay.spent.completion_tokens == books.billed.completion_tokens


def _check(report: StrategyReport, books: Books, replay: LedgerReplay) -> None:
    _check_books(replay, books)
    spent = report.spent
    assert (spent.prompt_tokens, spent.completion_tokens) == (
        replay.spent.prompt_tokens,
        replay.spent.completion_tokens,
    )
    assert spent.prompt_tokens == books.billed.prompt_tokens
    assert spent.completion_tokens == books.billed.completion_tokens
    assert report.prompt_tokens + report.completion_tokens == spent.total_tokens
    assert sum(r.prompt_tokens + r.completion_tokens for r in report.results) == spent.total_tokens


LIMITS = EndpointLimits(concurrency=3, retry=RetryPolicy(max_attempts=2, base_delay=0.0, max_delay=0.0))
budgets = st.builds(
    Budget,
    total_tokens=st.one_of(st.none(), st.integers(0, 3000)),
    completion_tokens=st.one_of(st.none(), st.integers(0, 400)),
)
question_budgets = st.one_of(st.none(), st.none(), st.builds(Budget, total_tokens=st.integers(0, 800)))
run_shape = {
    "questions": st.integers(1, 4),
    "max_tokens": st.integers(1, 12),
    "failure_rate": st.sampled_from([0.0, 0.0, 0.2, 0.5]),
    "seed": st.integers(0, 2**16),
    "fans_out": st.booleans(),
    "budget": budgets,
    "question_budget": question_budgets,
}


#: Starts one run on the chaos backend, with its events on the stream given.
Run = Callable[[ChaosBackend, EventStream], Coroutine[Any, Any, StrategyReport]]


def _run_checked(
    run: Run,
    *,
    questions: int,
    failure_rate: float,
    seed: int,
    fans_out: bool,
    budget: Budget,
    question_budget: Budget | None,
) -> StrategyReport | None:
    """Run `run` on a chaos backend and check its books; the report, or None when it did not finish
    (refused before it started, or stopped by a backend failure past its retries)."""
    books = Books()
    backend = ChaosBackend(books, random.Random(seed), failure_rate, fans_out=fans_out)
    events = EventStream()
    replay = LedgerReplay(events, budget, question_budget)
    try:
        report = asyncio.run(run(backend, events))
    except BackendError:  # the endpoint failed past its retries: the run stops, its books balance
        event("stopped by a backend failure")
        _check_books(replay, books)
        return None
    except Exception as error:  # a budget too small for one sample a question is refused up front
        assert "budget" in str(error) and books.calls == 0, error
        event("refused before it started")
        return None
    event("finished" if books.calls else "finished without a request")
    assert len(report.results) == questions
    _check(report, books, replay)
    return report


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=st.sampled_from(STRATEGIES), **run_shape)
def test_strategy_runs_stay_within_budget_and_settle_what_was_billed(
    spec: str,
    questions: int,
    max_tokens: int,
    failure_rate: float,
    seed: int,
    fans_out: bool,
    budget: Budget,
    question_budget: Budget | None,
) -> None:
    def run(backend: ChaosBackend, events: EventStream) -> Coroutine[Any, Any, StrategyReport]:
        return evaluate(
            _dataset(questions),
            parse_strategy(spec),
            backend,
            sampling=SamplingParams(max_tokens=max_tokens, seed=seed),
            budget=budget,
            question_budget=question_budget,
            limits=LIMITS,
            concurrency=2,
            events=events,
        )

    _run_checked(
        run,
        questions=questions,
        failure_rate=failure_rate,
        seed=seed,
        fans_out=fans_out,
        budget=budget,
        question_budget=question_budget,
    )


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(ALLOCATORS),
    verifier=st.booleans(),
    greedy=st.booleans(),
    budget_samples=st.integers(0, 24),
    **run_shape,
)
def test_allocator_runs_stay_within_budget_and_settle_what_was_billed(
    name: str,
    verifier: bool,
    greedy: bool,
    budget_samples: int,
    questions: int,
    max_tokens: int,
    failure_rate: float,
    seed: int,
    fans_out: bool,
    budget: Budget,
    question_budget: Budget | None,
) -> None:
    allocator = make_allocator(name, use_greedy=greedy, verifier_weight=2.0 if verifier else None)

    def run(backend: ChaosBackend, events: EventStream) -> Coroutine[Any, Any, StrategyReport]:
        return run_allocated(
            _dataset(questions),
            backend,
            allocator,
            budget_samples=budget_samples,
            sampling=SamplingParams(max_tokens=max_tokens, seed=seed),
            budget=budget,
            question_budget=question_budget,
            limits=LIMITS,
            concurrency=2,
            events=events,
        )

    report = _run_checked(
        run,
        questions=questions,
        failure_rate=failure_rate,
        seed=seed,
        fans_out=fans_out,
        budget=budget,
        question_budget=question_budget,
    )
    if report is not None:
        assert sum(r.samples for r in report.results) <= budget_samples
