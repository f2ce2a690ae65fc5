"""`budgetflow run PLAN`: run a plan (a DAG of nodes) and print its result and a per-node table."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from budgetflow.cli_journal import (
    JOURNAL_DEFAULT,
    JournalOpt,
    ReplayOpt,
    SessionOpt,
    interrupted,
    open_journaling,
)
from budgetflow.cli_options import (
    ApiKeyEnvOpt,
    BackendConcurrencyOpt,
    BackendOpt,
    BaseUrlOpt,
    MaxTokensOpt,
    ModelOpt,
    ModelPathOpt,
    SeedOpt,
    ThreadsOpt,
    TimeoutOpt,
    endpoint_spec,
)
from budgetflow.cli_output import console, exit_for, stdout
from budgetflow.errors import BudgetflowError, ConfigError
from budgetflow.events import EventStream
from budgetflow.plans import NodeResult, PlanResult, load_plan, run_plan
from budgetflow.runtime.context import EndpointLimits
from budgetflow.types import SamplingParams

__all__ = ["plan_json", "run_command"]

PLAN = "Plan"


def run_command(
    plan_file: Annotated[Path, typer.Argument(metavar="PLAN", help="The plan: a YAML or JSON file.")],
    budget_tokens: Annotated[
        int | None,
        typer.Option(
            min=1,
            rich_help_panel=PLAN,
            help="Hard cap on the plan's tokens (replaces the plan's budget_tokens); split across "
            "its nodes by their shares, else evenly, else by the plan's allocator.",
        ),
    ] = None,
    allocator: Annotated[
        str | None,
        typer.Option(
            rich_help_panel=PLAN,
            help="The allocator of the plan's `allocate` nodes (replaces the plan's): uniform, "
            "online, difficulty, early_stop …",
        ),
    ] = None,
    concurrency: Annotated[
        int, typer.Option(min=1, rich_help_panel=PLAN, help="Node executions in flight at once.")
    ] = 4,
    max_tokens: MaxTokensOpt = 128,
    seed: SeedOpt = 0,
    output: Annotated[
        Path | None, typer.Option(rich_help_panel=PLAN, help="Write the result and every node as JSON.")
    ] = None,
    backend: BackendOpt = "embedded",
    base_url: BaseUrlOpt = None,
    model: ModelOpt = None,
    api_key_env: ApiKeyEnvOpt = "OPENAI_API_KEY",
    timeout: TimeoutOpt = 120.0,
    model_path: ModelPathOpt = None,
    threads: ThreadsOpt = None,
    backend_concurrency: BackendConcurrencyOpt = 8,
    journal: JournalOpt = JOURNAL_DEFAULT,
    session: SessionOpt = None,
    replay: ReplayOpt = False,
) -> None:
    """Run a plan: every node starts when its inputs are ready, within the budget.

    Prints the plan's outputs and, per node, its strategy, samples, tokens, budget share,
    seconds and why it stopped. Journaled: a killed run continues with `budgetflow resume`."""
    try:
        plan = load_plan(plan_file, budget_tokens=budget_tokens, allocator=allocator)
        limits = EndpointLimits(concurrency=backend_concurrency)
        spec = endpoint_spec(backend, base_url, model, api_key_env, timeout, model_path, threads, limits)
        sampling = SamplingParams(max_tokens=max_tokens, seed=seed)
        setting = (spec, plan, concurrency, max_tokens, seed)
        journaling = open_journaling(journal, session, setting, replay=replay)
    except BudgetflowError as exc:
        raise exit_for(exc) from None
    chosen = journaling.backends((spec,))[0]
    events = EventStream(journaling.run_id("plan"))
    if not journaling.replay:
        journaling.journal.attach(events)
    recorded = journaling.journal.recorded(events.run_id)

    def finished(node: NodeResult) -> None:
        if node.status != "ok":
            console.print(escape(f"{node.node}: {node.status} — {node.reason}"), highlight=False)

    async def execute() -> PlanResult:
        async with chosen:
            return await run_plan(
                plan,
                chosen,
                sampling=sampling,
                concurrency=concurrency,
                limits=limits,
                events=events,
                on_node=finished,
                recorded=recorded,
            )

    try:
        with console.status(f"running {plan.name} ({len(plan.nodes)} nodes)"):
            result = asyncio.run(execute())
        journaling.journal.finish_session(journaling.session)
    except KeyboardInterrupt:
        raise interrupted(journaling) from None
    except BudgetflowError as exc:
        raise exit_for(exc) from None
    finally:
        journaling.journal.close()
    _show(result)
    if output is not None:
        _write(output, plan_json(result, session=journaling.session))
    if not result.complete:
        raise typer.Exit(1)


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
