"""`budgetflow bank record|score|simulate|calibrate`: sample banks and allocator replay."""

from __future__ import annotations

import asyncio
import json
import statistics
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from budgetflow.allocate import ALLOCATORS, Allocator, make_allocator
from budgetflow.answers.voting import Voting
from budgetflow.backends.base import Backend
from budgetflow.cli_output import console, exit_for, stdout
from budgetflow.errors import BudgetflowError, ConfigError
from budgetflow.evaluate.bank import BankQuestion, load_bank, record_bank, write_bank
from budgetflow.evaluate.calibrate import CalibrationTable, calibrate
from budgetflow.evaluate.datasets import Dataset, load_dataset
from budgetflow.evaluate.simulate import SimulationResult, oracle_accuracy, simulate
from budgetflow.evaluate.simulate_lanes import Lane, LaneSimulation, simulate_lanes
from budgetflow.types import SamplingParams

bank_app = typer.Typer(
    help="Record sample banks and replay budget allocators against them.", no_args_is_help=True
)


@bank_app.command("record")
def record_command(
    output: Annotated[Path, typer.Option(help="Where to write the bank (JSONL).")],
    dataset: Annotated[str, typer.Option(help="Built-in dataset name or JSONL path.")] = "chain_sum",
    limit: Annotated[int, typer.Option(help="Questions to record.")] = 50,
    seed: Annotated[int, typer.Option(help="Seed for dataset generation and sampling.")] = 0,
    k: Annotated[int, typer.Option(help="Samples per question (plus one greedy answer).")] = 16,
    temperature: Annotated[float, typer.Option(help="Sampling temperature of the K samples.")] = 0.5,
    max_tokens: Annotated[int, typer.Option(help="Most tokens per sample.")] = 48,
    backend: Annotated[str, typer.Option(help="`embedded` or `openai`.")] = "embedded",
    base_url: Annotated[str | None, typer.Option(help="API root for --backend openai.")] = None,
    model: Annotated[str | None, typer.Option(help="Model name for --backend openai.")] = None,
    threads: Annotated[int | None, typer.Option(help="llama.cpp threads for --backend embedded.")] = None,
    prompt_ensemble: Annotated[
        bool,
        typer.Option(
            help="Spread the K samples over each question's alternative prompts (built-in tasks: four "
            "few-shot variants); the greedy answer keeps the question's own prompt."
        ),
    ] = False,
    verify: Annotated[
        bool,
        typer.Option(
            help="Also score every answer with the likelihood verifier while its prompt is cached "
            "(embedded backend; the same scores `bank score` adds later)."
        ),
    ] = False,
) -> None:
    """Draw one greedy answer and K samples per question with any backend, and write a bank."""
    from budgetflow.cli import make_backend

    try:
        if k < 1:
            raise ConfigError(f"--k must be >= 1, got {k}")
        data = load_dataset(dataset, limit=limit, seed=seed)
        chosen = make_backend(backend, base_url, model, "OPENAI_API_KEY", 120.0, None, threads)
        sampling = SamplingParams(max_tokens=max_tokens, seed=seed)
        bank = asyncio.run(_record(data, chosen, k, sampling, temperature, prompt_ensemble, verify))
    except BudgetflowError as exc:
        raise exit_for(exc) from None
    write_bank(output, bank)
    mean_correct = statistics.fmean(sum(s.correct for s in q.samples) / len(q.samples) for q in bank)
    greedy = statistics.fmean(bool(q.greedy and q.greedy.correct) for q in bank)
    console.print(f"bank of {len(bank)} questions x {k} samples written to {output}")
    stdout.print(f"greedy accuracy {greedy:.1%}, mean sample accuracy {mean_correct:.1%}")


async def _record(
    data: Dataset,
    backend: Backend,
    k: int,
    sampling: SamplingParams,
    temperature: float,
    ensemble: bool,
    verify: bool,
) -> list[BankQuestion]:
    columns = (TextColumn("recording"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    async with backend:
        with Progress(*columns, console=console) as progress:
            task = progress.add_task("bank", total=len(data))
            return await record_bank(
                data,
                backend,
                k=k,
                sampling=sampling,
                temperature=temperature,
                on_question=lambda _: progress.advance(task),
                ensemble=ensemble,
                verify=verify,
            )


@bank_app.command("score")
def score_command(
    bank: Annotated[Path, typer.Option(help="The bank to score (JSONL).")],
    output: Annotated[Path, typer.Option(help="Where to write the scored bank (JSONL).")],
    dataset: Annotated[
        str, typer.Option(help="The dataset the bank was recorded from: its prompts and answer format.")
    ] = "chain_sum",
    limit: Annotated[
        int | None,
        typer.Option(help="Questions the dataset was generated with (default: as many as the bank has)."),
    ] = None,
    seed: Annotated[int, typer.Option(help="The seed the dataset was generated with.")] = 0,
    model_path: Annotated[
        Path | None, typer.Option(help="GGUF file to score with (default: the embedded model).")
    ] = None,
    threads: Annotated[int | None, typer.Option(help="llama.cpp threads.")] = None,
) -> None:
    """Add a likelihood verifier's score to every answer of a bank: the model's log-probability of
    stating that answer after the question (embedded llama.cpp model; prompt tokens only, no
    sampling). `bank simulate --verifier-weight` then weighs votes by it."""
    from budgetflow.backends.embedded import EmbeddedBackend

    try:
        questions = load_bank(bank)
        data = load_dataset(dataset, limit=limit or len(questions), seed=seed)
        backend = EmbeddedBackend(model_path=model_path, threads=threads)
        scored = asyncio.run(_score(questions, data, backend))
    except BudgetflowError as exc:
        raise exit_for(exc) from None
    write_bank(output, scored)
    console.print(f"{len(scored)} questions scored, written to {output}")


async def _score(questions: list[BankQuestion], data: Dataset, backend: Backend) -> list[BankQuestion]:
    from budgetflow.evaluate.bank import score_bank

    columns = (TextColumn("scoring"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    async with backend:
        with Progress(*columns, console=console) as progress:
            task = progress.add_task("score", total=len(questions))
            return await score_bank(questions, data, backend, on_question=lambda _: progress.advance(task))


@bank_app.command("simulate")
def simulate_command(
    bank: Annotated[
        list[Path],
        typer.Option(
            help="A bank file (JSONL) from `bank record` or any source in that format. Repeat it with "
            "--allocator deadline to give one bank per backend (the same questions recorded on each): "
            "the planner then chooses the backend and the batch size of every draw."
        ),
    ],
    allocator: Annotated[str, typer.Option(help=f"One of: {', '.join(ALLOCATORS)}.")] = "difficulty",
    budget_samples: Annotated[
        int | None, typer.Option(help="Total samples over all questions (a greedy answer costs one).")
    ] = None,
    budget_tokens: Annotated[
        int | None, typer.Option(help="Total completion tokens over all questions.")
    ] = None,
    budget_seconds: Annotated[
        float | None,
        typer.Option(
            help="Also a wall-clock limit: samples cost their recorded seconds. With --allocator deadline "
            "the planner picks each draw's question, backend (one --bank per backend) and batch size."
        ),
    ] = None,
    greedy: Annotated[
        bool, typer.Option(help="Spend one sample per question on the greedy answer as evidence.")
    ] = False,
    seeds: Annotated[int, typer.Option(help="Shuffles of each question's samples to average over.")] = 20,
    table: Annotated[
        Path | None,
        typer.Option(help="Calibration table for --allocator compute_optimal (`bank calibrate`)."),
    ] = None,
    quota_factor: Annotated[
        float | None,
        typer.Option(
            help="difficulty/online: cap each later sample at this x the longest probe sample's tokens."
        ),
    ] = None,
    confidence_weight: Annotated[
        float | None,
        typer.Option(
            help="Weigh each vote by exp(B x its mean_logprob) (banks recorded by `bank record` carry it) "
            "and let a sure greedy answer lower its question's priority; also reports the oracle that may "
            "count each question by this vote (oracle_any_vote_accuracy)."
        ),
    ] = None,
    greedy_weight: Annotated[
        float, typer.Option(help="How many samples the greedy vote is worth (with --greedy).")
    ] = 1.0,
    verifier_weight: Annotated[
        float | None,
        typer.Option(
            help="Weigh each vote by exp(V x its answer's verifier_score) (`bank score` adds the model's "
            "likelihood of each answer); also reports the oracle that may count each question by this "
            "vote (oracle_any_vote_accuracy)."
        ),
    ] = None,
    request_seconds: Annotated[
        float,
        typer.Option(
            help="--allocator deadline with --budget-seconds: fixed seconds each request costs its backend "
            "on top of its samples (HTTP latency, prompt processing); batching pays when it is high."
        ),
    ] = 0.0,
) -> None:
    """Replay an allocator against a bank; compare with uniform (floor) and the oracle (upper bound).

    The last line of stdout is one JSON object: accuracy, tokens, oracle_accuracy, uniform_accuracy
    (and, for the deadline planner, seconds and samples_by_lane).
    """
    try:
        questions = load_bank(bank[0])
        if len(bank) > 1 and allocator != "deadline":
            raise ConfigError("several --bank files (one per backend) need --allocator deadline")
        if (budget_samples is None) == (budget_tokens is None):
            raise ConfigError("give exactly one of --budget-samples and --budget-tokens")
        targets = None
        if table is not None:
            per_question = (budget_samples or 0) / len(questions)
            calibration = CalibrationTable.load(table)
            targets = calibration.targets_for(per_question)
            if confidence_weight is None and verifier_weight is None:  # the vote it was calibrated for
                confidence_weight = calibration.voting.confidence_weight
                verifier_weight = calibration.voting.verifier_weight
        chosen = make_allocator(
            allocator,
            use_greedy=greedy,
            bin_targets=targets,
            quota_factor=quota_factor,
            confidence_weight=confidence_weight,
            greedy_weight=greedy_weight,
            verifier_weight=verifier_weight,
        )

        def replay(policy: Allocator) -> SimulationResult:
            return simulate(
                questions,
                policy,
                budget_samples=budget_samples,
                budget_tokens=budget_tokens,
                budget_seconds=budget_seconds,
                seeds=seeds,
            )

        planned = None
        if allocator == "deadline" and budget_seconds is not None:
            planned = _plan_on_lanes(bank, chosen, budget_samples, budget_seconds, request_seconds, seeds)
            result = SimulationResult(
                allocator=chosen.name,
                accuracy=planned.accuracy,
                tokens=planned.tokens,
                samples_per_question=planned.samples_per_question,
                seeds=seeds,
            )
        else:
            result = replay(chosen)
        uniform = replay(make_allocator("uniform"))
        oracle_budget = (
            budget_samples if budget_samples is not None else _samples_for_tokens(questions, budget_tokens)
        )
        oracle = oracle_accuracy(questions, oracle_budget)
        summary: dict[str, object] = {
            "accuracy": round(result.accuracy, 4),
            "tokens": round(result.tokens, 1),
            "oracle_accuracy": round(oracle, 4),
            "uniform_accuracy": round(uniform.accuracy, 4),
        }
        if planned is not None:
            summary["seconds"] = round(planned.seconds, 2)
            summary["samples_by_lane"] = {k: round(v, 1) for k, v in planned.samples_by_lane.items()}
        if confidence_weight is not None or verifier_weight is not None:
            votings = (Voting(), chosen.voting)
            any_vote = oracle_accuracy(questions, oracle_budget, votings=votings)
            summary["oracle_any_vote_accuracy"] = round(any_vote, 4)
    except BudgetflowError as exc:
        raise exit_for(exc) from None
    stdout.print(_table([result, uniform], oracle, len(questions)))
    print(json.dumps(summary))


def _plan_on_lanes(
    paths: list[Path],
    allocator: Allocator,
    budget_samples: int | None,
    budget_seconds: float,
    request_seconds: float,
    seeds: int,
) -> LaneSimulation:
    """The deadline planner over one bank per backend (lanes named by file stem)."""
    if budget_samples is None:
        raise ConfigError("--allocator deadline with --budget-seconds needs --budget-samples")
    lanes = [Lane(name=path.stem, bank=load_bank(path), request_seconds=request_seconds) for path in paths]
    return simulate_lanes(
        lanes, allocator, budget_samples=budget_samples, budget_seconds=budget_seconds, seeds=seeds
    )


@bank_app.command("calibrate")
def calibrate_command(
    bank: Annotated[Path, typer.Option(help="The calibration bank (JSONL).")],
    output: Annotated[Path, typer.Option(help="Where to write the table (JSON).")],
    budget: Annotated[
        list[int] | None, typer.Option(help="Average samples per question; repeat. Default 2, 4, 8.")
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


def _samples_for_tokens(questions: list[BankQuestion], budget_tokens: int | None) -> int:
    """The oracle's sample budget for a token budget: tokens / mean tokens per sample."""
    assert budget_tokens is not None
    mean = statistics.fmean(s.completion_tokens for q in questions for s in q.samples) or 1.0
    return max(0, int(budget_tokens / mean))


def _table(results: list[SimulationResult], oracle: float, questions: int) -> Table:
    table = Table(title=f"allocation on {questions} questions (mean over {results[0].seeds} seeds)")
    for column in ("allocator", "accuracy", "tokens", "samples/question"):
        table.add_column(column, justify="left" if column == "allocator" else "right")
    for result in results:
        table.add_row(
            result.allocator,
            f"{result.accuracy:.1%}",
            f"{result.tokens:,.0f}",
            f"{result.samples_per_question:.2f}",
        )
    table.add_row("oracle", f"{oracle:.1%}", "-", "-")
    return table
