"""`budgetflow run PLAN`: run a plan (a DAG of nodes) and print its result and a per-node table."""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from budgetflow.allocate.registry import ALLOCATORS
from budgetflow.cli_groups import option_groups
from budgetflow.cli_journal import JournalOptions, run_journaled
from budgetflow.cli_options import BackendConcurrencyOpt, EndpointOptions, MaxTokensOpt, SeedOpt
from budgetflow.cli_output import console, exit_for, stdout
from budgetflow.errors import BudgetflowError, ConfigError
from budgetflow.evaluate.session import Journaling
from budgetflow.plans import NodeResult, Plan, PlanResult, load_plan, run_plan
from budgetflow.plans.node_runner import PlanResources
from budgetflow.runtime.context import EndpointLimits
from budgetflow.runtime.endpoints import EndpointSpec
from budgetflow.tools import DocumentSearch, Tool, default_tools
from budgetflow.types import SamplingParams

__all__ = ["plan_json", "run_command"]

PLAN = "Plan"


@dataclass(frozen=True)
class PlanOptions:
    budget_tokens: Annotated[
        int | None,
        typer.Option(
            min=1,
            rich_help_panel=PLAN,
            help="Hard cap on the plan's tokens (replaces the plan's budget_tokens); split across "
            "its nodes by their shares, else evenly, else by the plan's allocator.",
        ),
    ] = None
    allocator: Annotated[
        str | None,
        typer.Option(
            rich_help_panel=PLAN,
            help="The allocator of the plan's `allocate` nodes (replaces the plan's): "
            f"{', '.join(ALLOCATORS)}.",
        ),
    ] = None
    concurrency: Annotated[
        int, typer.Option(min=1, rich_help_panel=PLAN, help="Node executions in flight at once.")
    ] = 4
    max_tokens: MaxTokensOpt = 128
    seed: SeedOpt = 0
    output: Annotated[
        Path | None, typer.Option(rich_help_panel=PLAN, help="Write the result and every node as JSON.")
    ] = None
    backend_concurrency: BackendConcurrencyOpt = 8
    endpoint_lanes: Annotated[
        list[str] | None,
        typer.Option(
            "--endpoint",
            metavar="NAME=BASE_URL=MODEL",
            rich_help_panel=PLAN,
            help="An OpenAI-compatible endpoint the plan's roles name (`endpoint: NAME`), with the "
            "backend's key variable, timeout and limits (repeatable). Roles without one run on the "
            "backend (`default`).",
        ),
    ] = None
    documents: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR",
            rich_help_panel=PLAN,
            help="Give the plan's roles a `search` tool over the .txt and .md files in this folder (BM25).",
        ),
    ] = None

    def limits(self) -> EndpointLimits:
        return EndpointLimits(concurrency=self.backend_concurrency)

    def named_endpoints(self, template: EndpointSpec) -> dict[str, EndpointSpec]:
        """`--endpoint NAME=BASE_URL=MODEL` values by name; `ConfigError` naming a bad one."""
        named: dict[str, EndpointSpec] = {}
        for text in self.endpoint_lanes or []:
            name, _, lane = text.partition("=")
            fresh = bool(name) and name != "default" and name not in named
            spec = _lane_spec(lane, template) if fresh else None
            if spec is None:
                raise ConfigError(
                    f"--endpoint must be NAME=BASE_URL=MODEL, each NAME once and not 'default'; got {text!r}"
                )
            named[name] = spec
        return named

    def tools(self) -> dict[str, Tool] | None:
        """The default tools, with document search over `--documents` (None: the defaults)."""
        if self.documents is None:
            return None
        return {**default_tools(), "search": DocumentSearch.from_directory(self.documents)}


@option_groups
def run_command(
    plan_file: Annotated[Path, typer.Argument(metavar="PLAN", help="The plan: a YAML or JSON file.")],
    options: PlanOptions,
    endpoint: EndpointOptions,
    journaled: JournalOptions,
) -> None:
    """Run a plan: every node starts when its inputs are ready, within the budget.

    Prints the plan's outputs and, per node, its strategy, samples, tokens, budget share,
    seconds and why it stopped. Journaled: a killed run continues with `budgetflow resume`."""
    try:
        plan = load_plan(plan_file, budget_tokens=options.budget_tokens, allocator=options.allocator)
        spec = endpoint.spec(options.limits())
        named = options.named_endpoints(spec)
        tools = options.tools()
        _check_roles(plan, named, options.documents)
        setting = (
            spec,
            named,
            options.documents,
            plan,
            options.concurrency,
            options.max_tokens,
            options.seed,
        )
        journaling = journaled.open(setting)
    except BudgetflowError as exc:
        raise exit_for(exc) from None
    with console.status(f"running {plan.name} ({len(plan.nodes)} nodes)"):
        result = run_journaled(
            journaling, lambda: asyncio.run(_execute(plan, spec, named, tools, options, journaling))
        )
    _show(result)
    if options.output is not None:
        _write(options.output, plan_json(result, session=journaling.session))
    if not result.complete:
        raise typer.Exit(1)


def _lane_spec(lane: str, template: EndpointSpec) -> EndpointSpec | None:
    """`BASE_URL=MODEL` as an endpoint like `template` (None when it is not that shape)."""
    try:
        return EndpointSpec.from_lane(lane, template=template)
    except ConfigError:
        return None


def _check_roles(plan: Plan, named: dict[str, EndpointSpec], documents: Path | None) -> None:
    """Every role's endpoint is `default` or given with `--endpoint`, and a role that searches has
    `--documents` (checked before a session opens)."""
    for role in plan.roles:
        if role.endpoint != "default" and role.endpoint not in named:
            raise ConfigError(
                f"role {role.name!r} runs on endpoint {role.endpoint!r}: give it with "
                f"--endpoint {role.endpoint}=BASE_URL=MODEL"
            )
        if "search" in role.tools and documents is None:
            raise ConfigError(
                f"role {role.name!r} uses the search tool: give its documents with --documents DIR"
            )


async def _execute(
    plan: Plan,
    spec: EndpointSpec,
    named: dict[str, EndpointSpec],
    tools: dict[str, Tool] | None,
    options: PlanOptions,
    journaling: Journaling,
) -> PlanResult:
    """The plan on the chosen backend, the roles' named endpoints and `tools` (None: the
    defaults), its events journaled (answered from the journal when resuming or replaying)."""
    chosen, *others = journaling.backends((spec, *named.values()))
    events = journaling.events("plan")

    def finished(node: NodeResult) -> None:
        if node.status != "ok":
            console.print(escape(f"{node.node}: {node.status} — {node.reason}"), highlight=False)

    async with contextlib.AsyncExitStack() as stack:
        for backend in (chosen, *others):
            await stack.enter_async_context(backend)
        return await run_plan(
            plan,
            chosen,
            sampling=SamplingParams(max_tokens=options.max_tokens, seed=options.seed),
            concurrency=options.concurrency,
            limits=spec.limits,
            events=events,
            on_node=finished,
            recorded=journaling.journal.recorded(events.run_id),
            resources=PlanResources(endpoints=dict(zip(named, others, strict=True)), tools=tools),
        )


def _show(result: PlanResult) -> None:
    if result.topology is not None:
        checked = ", ".join(name for name, _ in result.topology.checks)
        where = f"; consistency checked at {checked}" if checked else ""
        console.print(escape(f"topology: {result.topology.kind} ({result.topology.reason}){where}"))
    stdout.print(node_table(result))
    budget = f" of {result.budget_tokens:,}" if result.budget_tokens is not None else ""
    console.print(
        f"{result.plan}: {result.spent.total_tokens:,}{budget} tokens in {result.seconds:.1f}s",
        highlight=False,
    )
    for name, value in result.outputs.items():
        stdout.print(escape(f"{name}: {json.dumps(value) if not isinstance(value, str) else value}"))
    if result.failed:
        console.print(escape(f"not finished: {', '.join(result.failed)}"), highlight=False)


def node_table(result: PlanResult) -> Table:
    """One row per node: strategy, status, samples, tokens, share of the plan's budget (of what was
    spent when it has none), seconds, and why it stopped."""
    table = Table(title=f"plan {result.plan}", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("node", "strategy", "status"):
        table.add_column(column, no_wrap=column == "node")
    for column in ("samples", "tokens", "share", "s"):
        table.add_column(column, justify="right")
    table.add_column("why it stopped", overflow="fold", ratio=1)
    spent = max(1, result.budget_tokens or result.spent.total_tokens)  # of the budget, when set
    for node in result.nodes.values():
        table.add_row(
            escape(node.node),
            escape(node.strategy),
            node.status,
            str(node.samples),
            f"{node.tokens:,}",
            f"{node.tokens / spent:.0%}",
            f"{node.seconds:.1f}",
            escape(node.reason),
        )
    return table


def plan_json(result: PlanResult, *, session: str | None = None) -> dict[str, Any]:
    """A run of a plan as JSON: its outputs, spend, and every node."""
    return {
        "plan": result.plan,
        "session": session,
        "complete": result.complete,
        "outputs": result.outputs,
        "failed": result.failed,
        "budget_tokens": result.budget_tokens,
        "spent": {
            "prompt_tokens": result.spent.prompt_tokens,
            "completion_tokens": result.spent.completion_tokens,
            "total_tokens": result.spent.total_tokens,
            "calls": result.spent.calls,
            "cost": result.spent.cost,
        },
        "seconds": round(result.seconds, 3),
        "topology": None
        if result.topology is None
        else {"kind": result.topology.kind, "reason": result.topology.reason},
        "nodes": [
            {
                "id": node.node,
                "strategy": node.strategy,
                "status": node.status,
                "value": node.value,
                "reason": node.reason,
                "samples": node.samples,
                "tokens": node.tokens,
                "budget_tokens": node.budget_tokens,
                "executions": node.executions,
                "started": node.started,
                "seconds": round(node.seconds, 3),
            }
            for node in result.nodes.values()
        ],
    }


def _write(path: Path, document: dict[str, Any]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    except OSError as error:
        raise exit_for(ConfigError(f"--output {path}: cannot write: {error}")) from None
    console.print(f"results written to {path}", highlight=False)
