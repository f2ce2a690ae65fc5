"""`budgetflow bank`: record sample banks, score them, calibrate and replay allocators on them."""

from __future__ import annotations

import asyncio
import json
import statistics
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from budgetflow.answers.voting import Voting
from budgetflow.cli_bank_options import (
    BankOpt,
    BudgetSecondsOpt,
    GreedyWeightOpt,
    QuotaFactorOpt,
    ReplayAllocatorOpt,
    ReplayBudgetSamplesOpt,
    ReplayBudgetTokensOpt,
    ReplayConfidenceWeightOpt,
    ReplayGreedyOpt,
    ReplayVerifierWeightOpt,
    RequestSecondsOpt,
    SeedsOpt,
    TableOpt,
)
from budgetflow.cli_groups import option_groups
from budgetflow.cli_help import PanelledCommand, PanelledGroup
from budgetflow.cli_journal import JournalOptions, run_journaled
from budgetflow.cli_options import (
    DatasetOpt,
    EndpointOptions,
    LimitOpt,
    MaxTokensOpt,
    ModelPathOpt,
    SeedOpt,
    ThreadsOpt,
    endpoint_spec,
)
from budgetflow.cli_output import console, exit_for, stdout
from budgetflow.cli_tune import tune_command
from budgetflow.errors import BudgetflowError
from budgetflow.evaluate.bank import (
    BankQuestion,
    append_bank_line,
    load_bank,
    record_bank,
    score_bank,
    write_bank,
)
from budgetflow.evaluate.calibrate import calibrate
from budgetflow.evaluate.datasets import Dataset, load_dataset
from budgetflow.evaluate.replay import ReplayConfig, ReplaySummary, replay_bank
from budgetflow.evaluate.session import Journaling
from budgetflow.runtime.endpoints import EndpointSpec, open_backend
from budgetflow.types import SamplingParams

bank_app = typer.Typer(
    cls=PanelledGroup,
    help="Record sample banks and replay budget allocators against them.",
    no_args_is_help=True,
)
bank_app.command("tune", cls=PanelledCommand)(tune_command)

T = TypeVar("T")


@dataclass(frozen=True)
class RecordOptions:
    output: Annotated[Path, typer.Option(help="Where to write the bank (JSONL).")]
    dataset: DatasetOpt = "chain_sum"
    limit: LimitOpt = 50
    seed: SeedOpt = 0
    k: Annotated[int, typer.Option(min=1, help="Samples per question (plus one greedy answer).")] = 16
    temperature: Annotated[float, typer.Option(min=0.0, help="Sampling temperature of the K samples.")] = 0.5
    max_tokens: MaxTokensOpt = 48
    prompt_ensemble: Annotated[
        bool,
        typer.Option(
            help="Spread the K samples over each question's alternative prompts (built-in tasks: four "
            "few-shot variants); the greedy answer keeps the question's own prompt."
        ),
    ] = False
    verify: Annotated[
        bool,
        typer.Option(
            help="Also score every answer with the likelihood verifier while its prompt is cached "
            "(embedded backend; the same scores `bank score` adds later)."
        ),
    ] = False

    @property
    def partial(self) -> Path:
        """Where finished questions are appended as they finish."""
        return self.output.with_suffix(self.output.suffix + ".partial.jsonl")


@bank_app.command("record", cls=PanelledCommand)
@option_groups
def record_command(options: RecordOptions, endpoint: EndpointOptions, journaled: JournalOptions) -> None:
    """Draw one greedy answer and K samples per question with any backend, and write a bank.
    Journaled like `eval`: a killed recording continues with `budgetflow resume SESSION`."""
    try:
        data = load_dataset(options.dataset, limit=options.limit, seed=options.seed)
        # a bank is reference data: the embedded model records it one request at a time, so the
        # same seed gives the same bank whatever else runs (continuous batching would not)
        spec = endpoint.spec(batching="serial")
        journaling = journaled.open((spec, data.name, len(data), options))
    except BudgetflowError as exc:
        raise exit_for(exc) from None

    async def record(advance: Callable[[object], None]) -> list[BankQuestion]:
        return await _record(data, spec, options, journaling, advance)

    bank = run_journaled(journaling, lambda: _with_progress("recording", len(data), record))
    write_bank(options.output, bank)
    options.partial.unlink(missing_ok=True)  # the bank holds all of it now
    mean_correct = statistics.fmean(sum(s.correct for s in q.samples) / len(q.samples) for q in bank)
    greedy = statistics.fmean(bool(q.greedy and q.greedy.correct) for q in bank)
    console.print(f"bank of {len(bank)} questions x {options.k} samples written to {options.output}")
    stdout.print(f"greedy accuracy {greedy:.1%}, mean sample accuracy {mean_correct:.1%}")


async def _record(
    data: Dataset,
    spec: EndpointSpec,
    options: RecordOptions,
    journaling: Journaling,
    advance: Callable[[object], None],
) -> list[BankQuestion]:
    chosen = journaling.backends((spec,))[0]
    events = journaling.events("bank")

    def finished(entry: BankQuestion) -> None:
        append_bank_line(options.partial, entry)  # on disk at once, not only at the end
        advance(entry)

    async with chosen:
        return await record_bank(
            data,
            chosen,
            k=options.k,
            sampling=SamplingParams(max_tokens=options.max_tokens, seed=options.seed),
            temperature=options.temperature,
            on_question=finished,
            ensemble=options.prompt_ensemble,
            verify=options.verify,
            events=events,
            recorded=journaling.journal.recorded(events.run_id),
        )


def _with_progress(
    label: str, total: int, work: Callable[[Callable[[object], None]], Coroutine[Any, Any, T]]
) -> T:
    """Run `work(advance)` with a progress bar that `advance` moves by one."""
    columns = (TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task(label, total=total)
        return asyncio.run(work(lambda _: progress.advance(task)))


@bank_app.command("score", cls=PanelledCommand)
def score_command(
    bank: Annotated[Path, typer.Option(help="The bank to score (JSONL).")],
    output: Annotated[Path, typer.Option(help="Where to write the scored bank (JSONL).")],
    dataset: Annotated[
        str, typer.Option(help="The dataset the bank was recorded from: its prompts and answer format.")
    ] = "chain_sum",
    limit: Annotated[
        int | None,
        typer.Option(
            min=1, help="Questions the dataset was generated with (default: as many as the bank has)."
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="The seed the dataset was generated with.")] = 0,
    model_path: ModelPathOpt = None,
    threads: ThreadsOpt = None,
) -> None:
    """Add a likelihood verifier's score to every answer of a bank: the model's log-probability of
    stating that answer after the question (embedded llama.cpp model; prompt tokens only, no
    sampling). `bank simulate --verifier-weight` then weighs votes by it."""
    try:
        questions = load_bank(bank)
        data = load_dataset(dataset, limit=limit or len(questions), seed=seed)
        scorer = open_backend(
            endpoint_spec("embedded", None, None, "", 120.0, model_path, threads, batching="serial")
        )

        async def score(advance: Callable[[object], None]) -> list[BankQuestion]:
            async with scorer:
                return await score_bank(questions, data, scorer, on_question=advance)

        scored = _with_progress("scoring", len(questions), score)
    except BudgetflowError as exc:
        raise exit_for(exc) from None
    write_bank(output, scored)
    console.print(f"{len(scored)} questions scored, written to {output}")


@bank_app.command("simulate", cls=PanelledCommand)
def simulate_command(
    bank: BankOpt,
    allocator: ReplayAllocatorOpt = "difficulty",
    budget_samples: ReplayBudgetSamplesOpt = None,
    budget_tokens: ReplayBudgetTokensOpt = None,
    budget_seconds: BudgetSecondsOpt = None,
    greedy: ReplayGreedyOpt = False,
    seeds: SeedsOpt = 20,
    table: TableOpt = None,
    quota_factor: QuotaFactorOpt = None,
    confidence_weight: ReplayConfidenceWeightOpt = None,
    greedy_weight: GreedyWeightOpt = 1.0,
    verifier_weight: ReplayVerifierWeightOpt = None,
    request_seconds: RequestSecondsOpt = 0.0,
) -> None:
    """Replay an allocator against a bank; compare with uniform (floor) and the oracle (upper bound).

    The last line of stdout is one JSON object: accuracy, tokens, oracle_accuracy, uniform_accuracy.

    The deadline planner adds seconds and samples_by_lane.
    """
    try:
        config = ReplayConfig(
            banks=tuple(bank),
            allocator=allocator,
            budget_samples=budget_samples,
            budget_tokens=budget_tokens,
            budget_seconds=budget_seconds,
            greedy=greedy,
            seeds=seeds,
            table=table,
            quota_factor=quota_factor,
            confidence_weight=confidence_weight,
            greedy_weight=greedy_weight,
            verifier_weight=verifier_weight,
            request_seconds=request_seconds,
        )
        replayed = replay_bank(config)
    except BudgetflowError as exc:
        raise exit_for(exc) from None
    stdout.print(_table(replayed))
    print(json.dumps(replayed.figures))


@bank_app.command("calibrate", cls=PanelledCommand)
def calibrate_command(
    bank: Annotated[Path, typer.Option(help="The calibration bank (JSONL).")],
    output: Annotated[Path, typer.Option(help="Where to write the table (JSON).")],
    budget: Annotated[
        list[int] | None, typer.Option(min=1, help="Average samples per question; repeat. Default 2, 4, 8.")
    ] = None,
    confidence_weight: Annotated[
        float | None, typer.Option(help="Calibrate for confidence-weighted votes (see `bank simulate`).")
    ] = None,
    verifier_weight: Annotated[
        float | None,
        typer.Option(
            help="Calibrate for verifier-weighted votes (a bank from `bank score`; see `bank simulate`)."
        ),
    ] = None,
) -> None:
    """Learn, per difficulty bin and budget, how many samples pay best (compute-optimal scaling).

    The table records the vote it was calibrated for; `bank simulate --table` uses that vote unless
    given its own weights."""
    try:
        voting = Voting(confidence_weight=confidence_weight, verifier_weight=verifier_weight)
        calibration = calibrate(load_bank(bank), budget or [2, 4, 8], voting=voting)
    except BudgetflowError as exc:
        raise exit_for(exc) from None
    calibration.save(output)
    for per_question, plan in sorted(calibration.plans.items()):
        stdout.print(f"budget {per_question}/question: samples per bin (easy, medium, hard) = {plan}")
    console.print(f"table written to {output}")


def _table(replayed: ReplaySummary) -> Table:
    results = [replayed.result, replayed.uniform]
    table = Table(title=f"allocation on {replayed.questions} questions (mean over {results[0].seeds} seeds)")
    for column in ("allocator", "accuracy", "tokens", "samples/question"):
        table.add_column(column, justify="left" if column == "allocator" else "right")
    for result in results:
        table.add_row(
            result.allocator,
            f"{result.accuracy:.1%}",
            f"{result.tokens:,.0f}",
            f"{result.samples_per_question:.2f}",
        )
    table.add_row("oracle", f"{replayed.oracle:.1%}", "-", "-")
    return table
