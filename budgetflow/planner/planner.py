"""Plan a task with the model, run the plan as it is written, repair and re-plan within budget."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from budgetflow.backends.base import Backend
from budgetflow.budget import Budget
from budgetflow.events import EventStream
from budgetflow.planner.writer import PLANNER_UNIT_BASE, PlanWriter, WrittenPlan, planner_prompt
from budgetflow.plans.executor import run_streamed_plan
from budgetflow.plans.model import SUBPLAN, Node, Plan, Role
from budgetflow.plans.node_runner import NodeCall, NodeRunner, PlanResources
from budgetflow.plans.outputs import render
from budgetflow.plans.results import PlanResult
from budgetflow.runtime.context import RunContext
from budgetflow.runtime.strategy_runner import StrategyOutcome, run_strategy
from budgetflow.strategies.parse import parse_strategy
from budgetflow.types import SamplingParams, Spend

__all__ = ["Planner", "TaskResult", "run_task"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Planner:
    """How a task is planned: the planner's max tokens and temperature, repairs of invalid lines,
    re-plans (each only when the budget left covers its estimated cost), how deep `strategy:
    plan` nodes may nest, the most nodes a plan may have, and the roles and limits the plans
    get (`template`: a plan with no nodes)."""

    max_tokens: int = 512
    temperature: float = 0.0
    max_repairs: int = 2
    max_replans: int = 1
    max_depth: int = 2
    max_nodes: int = 64
    concurrency: int = 4
    template: Plan = field(default_factory=lambda: Plan(nodes=(), roles=(Role("default", routable=False),)))


@dataclass(slots=True)
class TaskResult:
    """A planned task: its answer, each attempt's plan and result, and why it (re-)planned."""

    task: str
    answer: Any
    attempts: list[tuple[WrittenPlan, PlanResult]]
    decisions: list[str]
    spent: Spend

    @property
    def result(self) -> PlanResult:
        return self.attempts[-1][1]

    @property
    def replans(self) -> int:
        return len(self.attempts) - 1


async def run_task(
    task: str,
    backend: Backend,
    *,
    planner: Planner | None = None,
    budget_tokens: int | None = None,
    sampling: SamplingParams | None = None,
    resources: PlanResources | None = None,
    events: EventStream | None = None,
) -> TaskResult:
    """Plan `task` and run the plan as it is written, within `budget_tokens` for everything:
    the planner's calls, the nodes, repairs and re-plans."""
    planner = planner or Planner()
    resources = resources or PlanResources()
    sampling = sampling or SamplingParams(seed=0)
    context = RunContext(
        backend,
        lanes=tuple(resources.endpoints.values()),
        budget=Budget(total_tokens=budget_tokens) if budget_tokens is not None else None,
        events=events,
        seed=sampling.seed,
    )
    return await _plan_and_run(task, context, planner, resources, sampling)


async def _plan_and_run(
    task: str, context: RunContext, planner: Planner, resources: PlanResources, sampling: SamplingParams
) -> TaskResult:
    if resources.depth < planner.max_depth and SUBPLAN not in resources.runners:
        runners: dict[str, NodeRunner] = {**resources.runners, SUBPLAN: _SubPlanner(planner, resources)}
        resources = replace(resources, runners=runners)
    attempts: list[tuple[WrittenPlan, PlanResult]] = []
    decisions: list[str] = []
    feedback = ""
    for attempt in range(planner.max_replans + 1):
        prefix = "" if attempt == 0 else f"replan{attempt}/"
        before = context.ledger.spent.total_tokens
        written, result = await _attempt(
            task + feedback, context, planner, resources, sampling, prefix, attempt
        )
        attempts.append((written, result))
        why = _why_replan(written, result)
        if why is None:
            done = "the planner's call did not fit the budget" if written.starved else "done"
            decisions.append(f"attempt {attempt + 1}: {done}")
            break
        if attempt == planner.max_replans:
            decisions.append(
                f"attempt {attempt + 1}: {why}; no re-plan left (max_replans {planner.max_replans})"
            )
            break
        estimate = max(context.ledger.spent.total_tokens - before, planner.max_tokens)
        left = context.ledger.available("total_tokens")
        if left is not None and left < estimate:
            decisions.append(
                f"attempt {attempt + 1}: {why}; not re-planned: it would cost about {estimate:,} tokens "
                f"and {int(left):,} are left"
            )
            break
        cost = f"about {estimate:,} tokens, what this attempt cost"
        decisions.append(f"attempt {attempt + 1}: {why}; re-planning ({cost})")
        feedback = _feedback(result, why)
    final = attempts[-1][1]
    answer = _answer(final)
    return TaskResult(task, answer, attempts, decisions, context.ledger.spent)


async def _attempt(
    task: str,
    context: RunContext,
    planner: Planner,
    resources: PlanResources,
    sampling: SamplingParams,
    prefix: str,
    attempt: int,
) -> tuple[WrittenPlan, PlanResult]:
    queue: asyncio.Queue[Node | None] = asyncio.Queue()
    writer = PlanWriter(
        context,
        planner.template,
        queue,
        sampling=replace(sampling, max_tokens=planner.max_tokens, temperature=planner.temperature),
        max_repairs=planner.max_repairs,
        max_nodes=planner.max_nodes,
        unit_base=PLANNER_UNIT_BASE + 100 * attempt + 10_000 * resources.depth,
        prefix=prefix,
    )
    async with asyncio.TaskGroup() as group:
        running = group.create_task(
            run_streamed_plan(
                planner.template,
                queue,
                context,
                sampling=sampling,
                concurrency=planner.concurrency,
                resources=resources,
                prefix=prefix,
            )
        )
        written = await writer.write(planner_prompt(task, planner.template))
    return written, running.result()


def _why_replan(written: WrittenPlan, result: PlanResult) -> str | None:
    if written.starved and not written.accepted:
        return None  # the budget could not pay for a plan: nothing to re-plan with
    if not written.accepted:
        return f"no valid plan ({len(written.rejected)} lines rejected)"
    failed = result.failed
    if failed:
        return f"{len(failed)} node{'s' if len(failed) > 1 else ''} failed ({', '.join(failed[:3])})"
    if any(render(value).strip().upper().startswith("REPLAN") for value in result.outputs.values()):
        return "a node asked to re-plan"
    return None


def _feedback(result: PlanResult, why: str) -> str:
    lines = [f"- {name}: {node.status}, {node.reason}" for name, node in result.nodes.items()]
    return (
        f"\n\nA previous plan for this task did not work ({why}):\n"
        + "\n".join(lines[:20])
        + "\nWrite a new plan."
    )


def _answer(result: PlanResult) -> Any:
    if len(result.outputs) == 1:
        return next(iter(result.outputs.values()))
    return result.outputs or None


@dataclass(frozen=True, slots=True)
class _SubPlanner:
    """The runner of `strategy: plan` nodes: the node's prompt is planned as a task of its own
    and run inside the node's unit (every call a step of it, within its budget)."""

    planner: Planner
    resources: PlanResources

    async def __call__(self, call: NodeCall) -> StrategyOutcome:
        task = call.messages[-1].text
        unit = call.unit
        if self.resources.depth + 1 > self.planner.max_depth:
            return await run_strategy(
                parse_strategy("single"), unit, call.messages, sampling=call.sampling, extract=call.extract
            )
        lanes = self.resources.lanes()
        endpoints: Mapping[str, Backend] = {
            name: unit.journaled(lane) for name, lane in lanes.items() if lane
        }
        nested = replace(self.resources, endpoints=endpoints, depth=self.resources.depth + 1, runners={})
        headroom = unit.ledger.available("total_tokens")
        context = RunContext(
            unit.journaled(call.lane),
            lanes=tuple(endpoints.values()),
            budget=Budget(total_tokens=int(headroom)) if headroom is not None else None,
            seed=call.sampling.seed,
        )
        inner = await _plan_and_run(task, context, self.planner, nested, call.sampling)
        answer = None if inner.answer is None else render(inner.answer)
        nodes = len(inner.result.nodes)
        reason = f"planned into {nodes} nodes at depth {nested.depth}; " + "; ".join(inner.decisions)
        return StrategyOutcome(
            answer=answer, reason=reason, samples=(), usage=unit.usage, rounds=inner.replans + 1
        )
