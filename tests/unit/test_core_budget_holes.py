"""The holes the execution-core redesign closed: each test failed on the code before it."""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import AsyncIterator, Sequence

import pytest

from budgetflow.allocate import make_allocator
from budgetflow.answers import MatchGrader
from budgetflow.backends.base import Backend
from budgetflow.backends.openai import OpenAICompatibleBackend
from budgetflow.backends.scripted import FunctionBackend, ScriptedBackend
from budgetflow.backends.wrappers import (
    Budgeted,
    Cache,
    CircuitBreaker,
    ConcurrencyLimit,
    Metered,
    RateLimit,
    Retry,
    Wrapper,
)
from budgetflow.budget import Budget, Ledger
from budgetflow.errors import ConfigError
from budgetflow.evaluate.datasets import Dataset
from budgetflow.evaluate.runner import evaluate
from budgetflow.runtime.context import RunContext
from budgetflow.strategies.parse import _build, parse_strategy
from budgetflow.testing.stub_server import StubOpenAIServer
from budgetflow.types import Message, Question, Request, Response, SamplingParams, Usage

# ---- 1. prefill is prompt ----------------------------------------------------------------------


def test_a_prefill_heavy_request_reserves_its_prefill_and_cannot_pass_the_cap() -> None:
    trace = "step " * 400  # a beam/prune trace sent as prefill: 2,000 bytes
    request = Request(messages=(Message("user", "q"),), prefill=trace, sampling=SamplingParams(max_tokens=4))

    class Unbounded(Backend):  # no tokenizer: the byte bound is all Budgeted has
        async def complete(self, request: Request) -> Response:
            raise AssertionError("must not be sent: its prompt alone is over the budget")

    ledger = Ledger(Budget(total_tokens=500))
    with pytest.raises(Exception, match="total_tokens limit 500"):
        asyncio.run(Budgeted(Unbounded(), ledger).complete(request))
    assert ledger.spent.total_tokens == 0 and ledger.reserved.total_tokens == 0


def test_rate_limits_weigh_the_prefill_too() -> None:
    clock = [0.0]
    limited = RateLimit(ScriptedBackend(["ok"]), tokens_per_minute=100_000, clock=lambda: clock[0])
    request = Request(messages=(Message("user", "q"),), prefill="x" * 5000)
    asyncio.run(limited.complete(request))
    assert limited._tokens is not None and limited._tokens._level < 100_000 - 5000


# ---- 2 and 6. every wrapper forwards every optional capability ---------------------------------


class _Everything(Backend):
    """Implements every optional method and records which were called."""

    name = "everything"

    def __init__(self) -> None:
        self.called: list[str] = []

    async def complete(self, request: Request) -> Response:
        self.called.append("complete")
        return Response(completions=(), usage=Usage(1, 0))

    async def stream(self, request: Request) -> AsyncIterator[str]:
        self.called.append("stream")
        yield "x"

    async def count_prompt_tokens(self, request: Request) -> int:
        self.called.append("count_prompt_tokens")
        return 1

    async def count_tokens(self, text: str) -> int:
        self.called.append("count_tokens")
        return 1

    async def score_continuations(self, request: Request, continuations: Sequence[str]) -> list[float]:
        self.called.append("score_continuations")
        return [-1.0 for _ in continuations]

    def scoring_cost(self, continuations: int) -> tuple[int, int]:
        self.called.append("scoring_cost")
        return continuations, 0


OPTIONAL = ("stream", "count_prompt_tokens", "count_tokens", "score_continuations", "scoring_cost")


def _wrappers(inner: Backend, tmp_path: object) -> list[Wrapper]:
    return [
        Budgeted(inner, Ledger()),
        Retry(inner),
        Metered(inner),
        RateLimit(inner, requests_per_minute=1000),
        ConcurrencyLimit(inner, limit=2),
        CircuitBreaker(inner),
        Cache(inner, f"{tmp_path}/cache.sqlite"),
    ]


def test_the_optional_methods_are_the_backend_contracts() -> None:
    optional = {
        name
        for name, member in vars(Backend).items()
        if inspect.isfunction(member) and name not in ("complete", "aclose", "__aenter__", "__aexit__")
    }
    assert optional == {*OPTIONAL, "prompt_copies"}  # a new optional method must join OPTIONAL


@pytest.mark.parametrize("index", range(7))
def test_every_wrapper_forwards_every_optional_capability(index: int, tmp_path: object) -> None:
    inner = _Everything()
    wrapper = _wrappers(inner, tmp_path)[index]
    request = Request.from_prompt("q")

    async def use() -> None:
        async for _ in wrapper.stream(request):
            pass
        await wrapper.count_prompt_tokens(request)
        await wrapper.count_tokens("x")
        assert await wrapper.score_continuations(request, ["a", "b"]) == [-1.0, -1.0]
        assert wrapper.scoring_cost(2) == (2, 0)

    asyncio.run(use())
    assert set(OPTIONAL) <= set(inner.called), type(wrapper).__name__


def test_scoring_through_a_budgeted_stack_is_reserved_and_settled() -> None:
    ledger = Ledger(Budget(total_tokens=10_000))
    scores = asyncio.run(Budgeted(_Everything(), ledger).score_continuations(Request.from_prompt("q"), ["a"]))
    assert scores == [-1.0] and ledger.spent.prompt_tokens == 2 and ledger.spent.calls == 1
    two = asyncio.run(
        Budgeted(_Everything(), ledger).score_continuations(Request.from_prompt("q"), ["a", "b"])
    )
    assert two == [-1.0, -1.0] and ledger.spent.prompt_tokens == 2 + 4  # the prompt read once per text
    assert ledger.reserved.total_tokens == 0


# ---- 3. first-finish racers cancelled over HTTP are charged ------------------------------------


def test_cancelled_first_finish_racers_are_charged_conservatively() -> None:
    async def race() -> tuple[Ledger, int, int]:
        async with StubOpenAIServer(delay=0.05) as server:
            backend = OpenAICompatibleBackend(base_url=server.base_url, model="stub", api_key="k")
            ledger = Ledger(Budget(total_tokens=100_000))
            request = Request.from_prompt("q", n=4, keep_first=1, sampling=SamplingParams(max_tokens=16))
            response = await Budgeted(backend, ledger).complete(request)
            await backend.aclose()
            assert response.unreported.completion_tokens == 3 * 16  # three racers closed
            return ledger, server.served_prompt_tokens, server.served_completion_tokens

    ledger, prompt_served, completion_served = asyncio.run(race())
    assert ledger.spent.completion_tokens >= completion_served  # never less than the server billed
    assert ledger.spent.prompt_tokens >= prompt_served


# ---- 5. a quota never raises the user's max_tokens ---------------------------------------------


def test_a_quota_factor_above_one_never_raises_max_tokens() -> None:
    from budgetflow.evaluate.allocated import run_allocated

    seen: list[int] = []

    def reply(request: Request, index: int) -> str:
        seen.append(request.sampling.max_tokens)
        return "a b c d e f Answer: 1"

    allocator = make_allocator("difficulty", quota_factor=3.0)
    asyncio.run(
        run_allocated(
            _dataset(2),
            FunctionBackend(reply),
            allocator,
            budget_samples=12,
            sampling=SamplingParams(max_tokens=8),
        )
    )
    assert seen and max(seen) <= 8


# ---- 7. unknown strategy names ----------------------------------------------------------------


def test_an_unknown_strategy_name_is_an_error_with_a_suggestion() -> None:
    with pytest.raises(ConfigError, match="did you mean 'vote'"):
        parse_strategy("vot@4")
    with pytest.raises(ConfigError, match="unknown strategy 'bogus'"):
        _build("bogus", 4, True, __import__("budgetflow.strategies.parse").strategies.parse.StrategyOptions())


# ---- 8. the embedded tokenizer runs on the engine's worker -------------------------------------


def test_embedded_count_tokens_runs_on_the_engines_worker_thread() -> None:
    from budgetflow.backends.embedded import EmbeddedBackend

    threads: list[str] = []

    class Engine:
        def tokenize(self, text: str) -> list[int]:
            threads.append(threading.current_thread().name)
            return [1, 2, 3]

    backend = EmbeddedBackend.__new__(EmbeddedBackend)
    backend._executor = None
    backend._engine = Engine()  # type: ignore[assignment]
    assert asyncio.run(backend.count_tokens("abc")) == 3
    assert threads and threads[0].startswith("budgetflow-embedded")
    assert backend._executor is not None
    backend._executor.shutdown()


# ---- 9 and 10. judges are in the reports, and a refused judge starves its question ------------


def _dataset(size: int) -> Dataset:
    questions = tuple(
        Question(id=f"q{i}", text=str(i), gold="1", messages=(Message("user", f"question {i}"),))
        for i in range(size)
    )
    return Dataset(name="tiny", questions=questions, grader=MatchGrader())


def _judge_or_answer(request: Request, index: int) -> str:
    return "Answer: 0.9" if "judge" in request.messages[0].text.lower() else "work work Answer: 1"


def test_reports_count_judge_tokens_as_the_ledger_does() -> None:
    report = asyncio.run(
        evaluate(
            _dataset(3),
            parse_strategy("best_of_n@2"),
            FunctionBackend(_judge_or_answer),
            sampling=SamplingParams(),
        )
    )
    counted = report.prompt_tokens + report.completion_tokens
    assert counted == report.spent.total_tokens  # every figure comes from the ledger
    assert counted > sum(r.completion_tokens for r in report.results) > 0


def test_a_judge_the_budget_refuses_starves_the_question_and_the_run_goes_on() -> None:
    backend = FunctionBackend(_judge_or_answer)
    sampling = SamplingParams(max_tokens=6)
    report = asyncio.run(
        evaluate(
            _dataset(3),
            parse_strategy("best_of_n@4"),
            backend,
            sampling=sampling,
            budget=Budget(total_tokens=150),
        )
    )
    assert len(report.results) == 3 and report.spent.total_tokens <= 150
    assert any(r.budget_exhausted for r in report.results)


# ---- 11. a run budget is paced across its units ------------------------------------------------


def test_a_run_budget_is_paced_so_every_question_gets_a_sample() -> None:
    backend = FunctionBackend(lambda request, index: "x Answer: 1")
    sampling = SamplingParams(max_tokens=4)
    dataset = _dataset(20)
    # a batch of 2 reserves 34 + 2 x 4 tokens: 1,000 paced gives each question one batch; first come,
    # first served gave the first six 8 samples and the rest none
    report = asyncio.run(
        evaluate(
            dataset,
            parse_strategy("early_stop@8"),
            backend,
            sampling=sampling,
            budget=Budget(total_tokens=1000),
        )
    )
    assert all(r.samples >= 1 for r in report.results), [r.samples for r in report.results]
    assert report.spent.total_tokens <= 1000


def test_fair_share_splits_what_is_left_among_the_units_not_started() -> None:
    context = RunContext(
        ScriptedBackend([]), budget=Budget(total_tokens=100), unit_budget=Budget(total_tokens=30)
    )
    share = context.fair_share(4)
    assert share is not None and share.total_tokens == 25
    assert context.fair_share(2) == Budget(total_tokens=30)  # the unit budget is the ceiling


def test_a_zero_unit_budget_stays_zero_under_a_paced_run_budget() -> None:
    context = RunContext(
        ScriptedBackend([]), budget=Budget(total_tokens=100), unit_budget=Budget(total_tokens=0)
    )
    share = context.fair_share(4)
    assert share is not None and share.total_tokens == 0  # 0 is a limit, not "unset"
