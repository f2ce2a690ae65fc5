"""`budgetflow eval`: options in groups become one `EvalConfig`; the library runs it; this module
renders progress bars, the summary table, the results files and the plots."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from budgetflow.budget import Budget
from budgetflow.cli_eval_options import (
    AllocationOptions,
    BudgetOptions,
    DatasetOptions,
    OutputOptions,
    SamplingOptions,
    ServingOptions,
    eval_config,
)
from budgetflow.cli_groups import option_groups
from budgetflow.cli_journal import JournalOptions, run_journaled
from budgetflow.cli_options import EndpointOptions
from budgetflow.cli_output import console, exit_for, stdout
from budgetflow.cli_trace import Tracing, partial_results
from budgetflow.errors import BudgetflowError
from budgetflow.evaluate.datasets import Dataset
from budgetflow.evaluate.report import plot_reports, write_markdown
from budgetflow.evaluate.runner import StrategyReport
from budgetflow.evaluate.session import EvalConfig, Journaling, run_eval, write_results
from budgetflow.events import BudgetSettled, Event, QuestionFinished, Subscriber

__all__ = ["eval_command"]


@option_groups
def eval_command(
    data: DatasetOptions,
    sampling: SamplingOptions,
    budgets: BudgetOptions,
    allocation: AllocationOptions,
    endpoint: EndpointOptions,
    serving: ServingOptions,
    out: OutputOptions,
    journaled: JournalOptions,
) -> None:
    """Answer a dataset with one or more strategies and compare accuracy, tokens and time.

    Prints a progress bar per run, then a table; writes every question's result to --output.

    Example: budgetflow eval --dataset chain_sum --limit 50 -s single -s vote@8
    """
    try:
        out.check()
        spec = endpoint.spec(serving.limits(), serving.batching)
        config = eval_config(data, sampling, budgets, allocation, spec)
        questions = config.dataset.load()
        journaling = journaled.open(config)
    except BudgetflowError as exc:
        raise exit_for(exc) from None
    tracing = Tracing(out.otel_endpoint)
    try:
        reports = run_journaled(
            journaling,
            lambda: asyncio.run(_run_with_progress(config, questions, out.output, journaling, tracing)),
        )
    finally:
        tracing.close()
    _render(reports, endpoint.backend, out.output, out.plots)


async def _run_with_progress(
    config: EvalConfig,
    data: Dataset,
    output: Path,
    journaling: Journaling,
    tracing: Tracing,
) -> list[StrategyReport]:
    """Run `config` with a progress bar per run, writing the results after every run."""
    with _progress() as progress:

        def progress_view(name: str, questions: int) -> Subscriber:
            return _ProgressView(progress, name, questions, config.budget)

        partial = output.with_suffix(".partial.jsonl")
        partial.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text("", encoding="utf-8")
        watch = partial_results(partial, progress_view)
        watch = tracing.watching(watch)

        def save(reports: list[StrategyReport]) -> None:
            write_results(output, data, reports, config.sampling, audit=_audit(config, journaling))

        return await run_eval(config, data, watch=watch, on_report=save, journaling=journaling)


def _audit(config: EvalConfig, journaling: Journaling) -> dict[str, object]:
    """What an auditor needs beside the results: who ran what, where, when, with which version."""
    from budgetflow import __version__
    from budgetflow.journal import redact

    endpoint = config.endpoint
    return {
        "command": [redact(part) for part in sys.argv],
        "budgetflow_version": __version__,
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "backend": {"kind": endpoint.kind, "base_url": endpoint.base_url, "model": endpoint.model},
        "journal": {"path": journaling.journal.location, "session": journaling.session},
    }


def _render(reports: list[StrategyReport], backend: str, output: Path, plots: bool) -> None:
    stdout.print(_summary_table(reports, chosen_name=backend))
    for report in reports:
        if report.replayed_calls or report.ambiguous_calls:
            ambiguous = (
                f", {report.ambiguous_calls} in flight when it stopped sent again (ambiguous: the "
                "endpoint may have billed them twice)"
                if report.ambiguous_calls
                else ""
            )
            console.print(
                f"{report.strategy}: {report.replayed_calls} calls answered from the journal "
                f"(not sent again){ambiguous}"
            )
    written = [output, output.with_suffix(".md")]
    write_markdown(reports, written[1])
    if plots and reports:
        written += plot_reports(reports, output.with_suffix(""))
    console.print("results written to " + ", ".join(str(p) for p in written))


class _ProgressView:
    """Reads the run's event stream: advances on finished questions, shows accuracy and spend
    (every settled reservation: samples, judges, verifiers, retries and cancelled racers)."""

    def __init__(self, progress: Progress, name: str, total: int, budget: Budget | None) -> None:
        self._progress = progress
        self._task = progress.add_task(name, total=total, accuracy="-", spend="0 tok")
        self._limit = budget.total_tokens if budget else None
        self._scores: list[float] = []
        self._tokens = 0

    def __call__(self, event: Event) -> None:
        if isinstance(event, BudgetSettled):
            self._tokens += event.actual.total_tokens
            spend = f"{self._tokens:,} tok" + (f" / {self._limit:,}" if self._limit else "")
            self._progress.update(self._task, spend=spend)
        elif isinstance(event, QuestionFinished):
            self._scores.append(event.score)
            accuracy = f"{sum(self._scores) / len(self._scores):.0%}"
            self._progress.update(self._task, advance=1, accuracy=accuracy)


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description:>10}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("accuracy {task.fields[accuracy]}"),
        TextColumn("{task.fields[spend]}"),
        TimeElapsedColumn(),
        console=console,
    )


def _summary_table(reports: list[StrategyReport], *, chosen_name: str) -> Table:
    first = reports[0] if reports else None
    title = f"{first.dataset}, {len(first.results)} questions, backend {chosen_name}" if first else ""
    table = Table(title=title)
    table.add_column("strategy", overflow="fold", max_width=26)  # a long policy name wraps
    for column in ("accuracy", "compl. tok", "prompt tok", "wall s", "q/s", "starved"):
        table.add_column(column, justify="right", no_wrap=True)
    for report in reports:
        table.add_row(
            report.strategy,
            f"{report.accuracy:.1%}",
            f"{report.completion_tokens:,}",
            f"{report.prompt_tokens:,}",
            f"{report.wall_seconds:.1f}",
            f"{report.questions_per_second:.2f}",
            str(sum(r.budget_exhausted for r in report.results)),
        )
    return table
