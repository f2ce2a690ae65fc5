"""The dataflow scheduler: every node of a plan starts the moment its inputs are ready.

No supersteps: a node waits only for its own dependencies, so a slow branch never delays an
unrelated fast one. Among ready work the longest remaining critical path goes first, measured in
the tokens its nodes may decode (each node's max_tokens, else the run's: a long-winded node
weighs more than a short one, and with equal limits the path counts nodes); at most
`concurrency` units are in flight (and the endpoint's own limits hold beneath). A `map` node is
expanded at run time into one work item per element of its source's list, each a unit of its
own — a parent holds no slot while its items wait, so fan-outs nested deeper than the pool
cannot deadlock. Fan-in `first` and `quorum(k)` start a node as soon as the first source (or k
agreeing sources) finished, and cancel the other sources mid-generation (their spend stops and
is settled in the ledger). A node that fails after its retries fails its dependants with the
reason; independent branches finish; the result says what failed.

Every node execution is a unit of one `RunContext` (the execution core): its budget share, its
strategy (`run_strategy`), its ledger and events — there is no other run loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import replace

from budgetflow.backends.base import Backend
from budgetflow.budget import Budget, Price
from budgetflow.errors import ConfigError
from budgetflow.events import EventStream
from budgetflow.journal import RecordedStep
from budgetflow.plans.model import Node, Plan
from budgetflow.plans.node_runner import PlanResources
from budgetflow.plans.results import NodeResult, PlanResult
from budgetflow.plans.scheduler import STREAM_STRIDE, PlanRun
from budgetflow.runtime.context import EndpointLimits, RunContext
from budgetflow.types import SamplingParams

__all__ = ["STREAM_STRIDE", "NodeResult", "PlanResult", "run_plan", "run_streamed_plan"]


async def run_plan(
    plan: Plan,
    backend: Backend,
    *,
    sampling: SamplingParams | None = None,
    concurrency: int = 4,
    budget_tokens: int | None = None,
    limits: EndpointLimits | None = None,
    prices: dict[str, Price] | None = None,
    events: EventStream | None = None,
    on_node: Callable[[NodeResult], None] | None = None,
    recorded: Mapping[tuple[str, int], RecordedStep] | None = None,
    resources: PlanResources | None = None,
) -> PlanResult:
    """Run `plan` on `backend` within `budget_tokens` (default: the plan's own). `recorded`:
    a journaled run's steps, when this run resumes or replays it. `resources`: the roles'
    endpoints, tools, auction bidders and node runners (see `PlanResources`)."""
    if concurrency < 1:
        raise ConfigError(f"concurrency must be >= 1, got {concurrency}")
    resources = resources or PlanResources()
    resources.check(plan)
    total = budget_tokens if budget_tokens is not None else plan.budget_tokens
    context = RunContext(
        backend,
        lanes=tuple(resources.endpoints.values()),
        budget=Budget(total_tokens=total) if total is not None else None,
        limits=limits,
        prices=prices,
        events=events,
        seed=(sampling or SamplingParams()).seed,
        recorded=recorded,
    )
    run = PlanRun(plan, context, sampling or SamplingParams(seed=0), concurrency, total, on_node, resources)
    started = time.perf_counter()
    await run.run()
    return _plan_result(run, plan, time.perf_counter() - started)


async def run_streamed_plan(
    template: Plan,
    incoming: asyncio.Queue[Node | None],
    context: RunContext,
    *,
    sampling: SamplingParams,
    concurrency: int = 4,
    resources: PlanResources | None = None,
    prefix: str = "",
    on_node: Callable[[NodeResult], None] | None = None,
) -> PlanResult:
    """Run the nodes put on `incoming` (until None) as they arrive, on `context`: a node
    starts the moment it and its dependencies are there, while later nodes are still being
    written. `template` gives the roles, allocator and limits (its nodes run first); `prefix`
    goes before every unit id."""
    resources = resources or PlanResources()
    resources.check(template)
    total = context.ledger.budget.total_tokens
    run = PlanRun(template, context, sampling, concurrency, total, on_node, resources)
    run.stride, run.prefix = STREAM_STRIDE, prefix
    started = time.perf_counter()
    await run.run(incoming)
    final = replace(template, nodes=tuple(run.nodes.values()))
    return _plan_result(run, final, time.perf_counter() - started)


def _plan_result(run: PlanRun, plan: Plan, seconds: float) -> PlanResult:
    wanted = plan.results
    outputs = {name: run.results[name].value for name in wanted if run.results[name].status == "ok"}
    return PlanResult(
        plan=plan.name,
        nodes=run.results,
        outputs=outputs,
        spent=run.context.ledger.spent,
        budget_tokens=run.budget_tokens,
        seconds=seconds,
        wanted=wanted,
        topology=run.topology,
    )
