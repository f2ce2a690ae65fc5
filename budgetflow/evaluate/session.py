"""One `budgetflow eval` run as data (`EvalConfig`), and the library function that runs it.

The CLI only turns its options into an `EvalConfig` and renders what `run_eval` reports; a
script, a notebook or (later) the server builds the same config and gets the same runs:
strategies first, then every allocator at every sample budget, each run on one `RunContext`
(through `evaluate`, `run_allocated` or, for the deadline planner with a deadline,
`run_planned` over the main endpoint and its lanes).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from budgetflow.allocate import Allocator
from budgetflow.allocate.policy import PolicyTable
from budgetflow.backends.base import Backend
from budgetflow.budget import Budget, Price
from budgetflow.errors import ConfigError
from budgetflow.evaluate.allocated import run_allocated
from budgetflow.evaluate.allocated_lanes import run_planned
from budgetflow.evaluate.datasets import Dataset, FieldMap, PromptSpec, load_dataset
from budgetflow.evaluate.runner import StrategyReport, evaluate
from budgetflow.events import EventStream, RunStarted, Subscriber
from budgetflow.journal import Journal, RecordedStep
from budgetflow.runtime.endpoints import EndpointSpec, open_backend
from budgetflow.strategies.base import Strategy
from budgetflow.types import Request, Response, SamplingParams

__all__ = ["DatasetSpec", "EvalConfig", "Journaling", "RunWatcher", "run_eval", "write_results"]

#: Called as each run starts with its name and its number of questions; what it returns (if
#: anything) subscribes to that run's events (the CLI's progress bars).
RunWatcher = Callable[[str, int], Subscriber | None]


@dataclass(frozen=True, slots=True, kw_only=True)
class DatasetSpec:
    """A built-in dataset by name or a JSONL file by path, and how much of it to use."""

    name: str = "chain_sum"
    limit: int = 50
    seed: int = 0
    fields: FieldMap | None = None
    prompt: PromptSpec | None = None

    def load(self) -> Dataset:
        return load_dataset(
            self.name, limit=self.limit, seed=self.seed, fields=self.fields, prompt=self.prompt
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class EvalConfig:
    """Strategies and allocators to run on one dataset and endpoint, under one set of limits.

    `budget` caps each run (strategy or allocator at one sample budget) and `question_budget`
    each question; `budget_samples` lists the total-sample budgets every allocator is run at;
    `lanes` are more endpoints for the deadline planner (it needs `budget.deadline_seconds`);
    `policy` (from `budgetflow bank tune`) is run at every sample budget with its plan for that
    budget per question (its temperature, when it fixes one)."""

    dataset: DatasetSpec = field(default_factory=DatasetSpec)
    strategies: tuple[Strategy, ...] = ()
    allocators: tuple[Allocator, ...] = ()
    budget_samples: tuple[int, ...] = ()
    sampling: SamplingParams = field(default_factory=SamplingParams)
    temperature: float = 0.5
    concurrency: int = 4
    budget: Budget | None = None
    question_budget: Budget | None = None
    prices: Mapping[str, Price] = field(default_factory=dict)
    endpoint: EndpointSpec = field(default_factory=EndpointSpec)
    lanes: tuple[EndpointSpec, ...] = ()
    ensemble: bool = False
    policy: PolicyTable | None = None

    def __post_init__(self) -> None:
        if not self.strategies and not self.allocators and self.policy is None:
            raise ConfigError("nothing to run: give at least one strategy, allocator or policy")
        if (self.allocators or self.policy is not None) and not self.budget_samples:
            raise ConfigError(
                "allocators and policies need a sample budget (--budget-samples: total over all questions)"
            )
        if any(total < 1 for total in self.budget_samples):
            raise ConfigError(f"every sample budget must be >= 1, got {list(self.budget_samples)}")
        if self.concurrency < 1:
            raise ConfigError(f"concurrency must be >= 1, got {self.concurrency}")
        if self.lanes and (self.deadline is None or not any(a.name == "deadline" for a in self.allocators)):
            raise ConfigError(
                "lanes (--lane) need the deadline allocator (--allocator deadline)"
                " and a deadline (--deadline-seconds)"
            )

    @property
    def deadline(self) -> float | None:
        return self.budget.deadline_seconds if self.budget else None


@dataclass(frozen=True, slots=True)
class Journaling:
    """Where a session's runs are journaled: each run's id is `session/NAME`, and a run found in
    the journal under that id is resumed (its finished calls answered from it)."""

    journal: Journal
    session: str
    #: Replay: every call must be answered from the journal; none is sent (there is no backend).
    replay: bool = False

    def run_id(self, name: str) -> str:
        return f"{self.session}/{name}"

    def events(self, name: str) -> EventStream:
        """The event stream of run `name`, journaled (a replay reads the journal, writes nothing)."""
        events = EventStream(self.run_id(name))
        if not self.replay:
            self.journal.attach(events)
        return events

    def backends(self, specs: tuple[EndpointSpec, ...]) -> list[Backend]:
        if self.replay:
            return [JournalOnly(spec.model or spec.kind) for spec in specs]
        return [open_backend(spec) for spec in specs]


class JournalOnly(Backend):
    """The endpoint of a replay: a call the journal cannot answer is an error, never a request."""

    def __init__(self, model: str) -> None:
        self.name = f"replay:{model}"
        self._model = model

    @property
    def model_name(self) -> str:
        return self._model

    async def complete(self, request: Request) -> Response:
        raise ConfigError(
            f"replay: unit {request.unit_id!r} makes a call the journal does not hold (the session "
            "did not finish, or the replayed configuration asks for more); use budgetflow resume"
        )

    async def score_continuations(self, request: Request, continuations: Sequence[str]) -> list[float]:
        return await self.complete(request)  # type: ignore[return-value]  # always raises


async def run_eval(
    config: EvalConfig,
    data: Dataset,
    *,
    watch: RunWatcher | None = None,
    on_report: Callable[[list[StrategyReport]], None] | None = None,
    journaling: Journaling | None = None,
) -> list[StrategyReport]:
    """Every run of `config` on `data`, in order; `on_report` sees the reports so far after each.
    With `journaling`, every event goes to the journal and a run already journaled resumes."""
    reports: list[StrategyReport] = []
    specs = (config.endpoint, *config.lanes)
    backends = journaling.backends(specs) if journaling else [open_backend(spec) for spec in specs]
    async with contextlib.AsyncExitStack() as stack:
        for backend in backends:
            await stack.enter_async_context(backend)
        for strategy in config.strategies:
            events = _events(watch, strategy.name, len(data), journaling, config.budget)
            recorded = journaling.journal.recorded(events.run_id) if journaling else None
            report = await _run_strategy(config, data, strategy, backends[0], events, recorded)
            report.temperature = getattr(strategy, "temperature", None)
            reports.append(report)
            if on_report is not None:
                on_report(reports)
        for allocator in config.allocators:
            for total in config.budget_samples:
                reports.append(
                    await _run_allocator(config, data, allocator, total, backends, watch, journaling)
                )
                if on_report is not None:
                    on_report(reports)
        for total in config.budget_samples if config.policy is not None else ():
            reports.append(await _run_policy(config, data, total, backends, watch, journaling))
            if on_report is not None:
                on_report(reports)
    return reports


async def _run_policy(
    config: EvalConfig,
    data: Dataset,
    total: int,
    backends: list[Backend],
    watch: RunWatcher | None,
    journaling: Journaling | None,
) -> StrategyReport:
    """The policy's plan for `total` samples over `data`, as an allocation run."""
    assert config.policy is not None
    plan = config.policy.for_budget(total / len(data))
    planned = config if plan.temperature is None else replace(config, temperature=plan.temperature)
    report = await _run_allocator(
        planned, data, plan.build(), total, backends, watch, journaling, f"policy@{total}"
    )
    report.strategy = f"policy:{plan.label}@{total}"
    return report


def _events(
    watch: RunWatcher | None,
    name: str,
    questions: int,
    journaling: Journaling | None,
    budget: Budget | None,
    budget_samples: int | None = None,
) -> EventStream:
    """A run's event stream, journaled and watched; its first event says what the run is."""
    events = journaling.events(name) if journaling is not None else EventStream()
    subscriber = watch(name, questions) if watch is not None else None
    if subscriber is not None:
        events.subscribe(subscriber)
    tokens = budget.total_tokens if budget is not None else None
    started = RunStarted(name=name, questions=questions, budget_tokens=tokens, budget_samples=budget_samples)
    events.emit(started)
    return events


async def _run_strategy(
    config: EvalConfig,
    data: Dataset,
    strategy: Strategy,
    backend: Backend,
    events: EventStream,
    recorded: Mapping[tuple[str, int], RecordedStep] | None,
) -> StrategyReport:
    return await evaluate(
        data,
        strategy,
        backend,
        sampling=config.sampling,
        concurrency=config.concurrency,
        budget=config.budget,
        question_budget=config.question_budget,
        limits=config.endpoint.limits,
        prices=dict(config.prices),
        events=events,
        recorded=recorded,
    )


async def _run_allocator(
    config: EvalConfig,
    data: Dataset,
    allocator: Allocator,
    total: int,
    backends: list[Backend],
    watch: RunWatcher | None,
    journaling: Journaling | None,
    run_name: str | None = None,
) -> StrategyReport:
    planned = allocator.name == "deadline" and config.deadline is not None
    name = f"alloc:{allocator.name}@{total}"
    if planned and len(backends) > 1:
        name = f"alloc:deadline[{len(backends)} backends]@{total}"
    events = _events(watch, run_name or name, len(data), journaling, config.budget, total)
    recorded = journaling.journal.recorded(events.run_id) if journaling else None
    if planned:
        assert config.deadline is not None
        report = await run_planned(
            data,
            backends,
            allocator,
            budget_samples=total,
            deadline_seconds=config.deadline,
            sampling=config.sampling,
            temperature=config.temperature,
            budget=config.budget,
            question_budget=config.question_budget,
            limits=config.endpoint.limits,
            prices=dict(config.prices),
            ensemble=config.ensemble,
            events=events,
            recorded=recorded,
        )
    else:
        report = await run_allocated(
            data,
            backends[0],
            allocator,
            budget_samples=total,
            sampling=config.sampling,
            temperature=config.temperature,
            concurrency=config.concurrency,
            budget=config.budget,
            question_budget=config.question_budget,
            limits=config.endpoint.limits,
            prices=dict(config.prices),
            ensemble=config.ensemble,
            events=events,
            recorded=recorded,
        )
    report.strategy = name
    report.temperature = config.temperature
    return report


def write_results(
    path: Path,
    data: Dataset,
    reports: list[StrategyReport],
    sampling: SamplingParams,
    *,
    audit: Mapping[str, object] | None = None,
) -> None:
    """Every report with every question's result as JSON, replaced atomically (a crash mid-write
    leaves the previous file). `sampling` is what every run shares; each report says the
    temperature its samples were drawn at. `audit` (the command line, version, time, backend,
    journal session) is written as it is."""
    path.parent.mkdir(parents=True, exist_ok=True)
    shared = {name: value for name, value in asdict(sampling).items() if name != "temperature"}
    document = {
        **(audit or {}),
        "dataset": data.name,
        "questions": len(data),
        "sampling": shared,
        "reports": [{**r.summary(), "results": [asdict(q) for q in r.results]} for r in reports],
    }
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_text(json.dumps(document, indent=2), encoding="utf-8")
    temporary.replace(path)
