"""Options of `budgetflow bank simulate`, declared once beside the shared ones in `cli_options`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from budgetflow.allocate import ALLOCATORS
from budgetflow.cli_options import positive_number

BANK = "Bank"
ALLOCATION = "Allocation"
BUDGETS = "Budgets"
VOTES = "Votes"

__all__ = [
    "BankOpt",
    "BudgetSecondsOpt",
    "GreedyWeightOpt",
    "QuotaFactorOpt",
    "ReplayAllocatorOpt",
    "ReplayBudgetSamplesOpt",
    "ReplayBudgetTokensOpt",
    "ReplayConfidenceWeightOpt",
    "ReplayGreedyOpt",
    "ReplayVerifierWeightOpt",
    "RequestSecondsOpt",
    "SeedsOpt",
    "TableOpt",
]

BankOpt = Annotated[
    list[Path],
    typer.Option(
        rich_help_panel=BANK,
        metavar="FILE",
        help="A bank file (JSONL) from `bank record` or any source in that format. Repeat it with "
        "--allocator deadline to give one bank per backend (the same questions recorded on each): "
        "the planner then chooses the backend and the batch size of every draw.",
    ),
]

ReplayAllocatorOpt = Annotated[
    str, typer.Option(rich_help_panel=ALLOCATION, metavar="NAME", help=f"One of: {', '.join(ALLOCATORS)}.")
]

ReplayBudgetSamplesOpt = Annotated[
    int | None,
    typer.Option(
        rich_help_panel=BUDGETS, min=1, help="Total samples over all questions (a greedy answer costs one)."
    ),
]

ReplayBudgetTokensOpt = Annotated[
    int | None,
    typer.Option(rich_help_panel=BUDGETS, min=1, help="Total completion tokens over all questions."),
]

BudgetSecondsOpt = Annotated[
    float | None,
    typer.Option(
        rich_help_panel=BUDGETS,
        parser=positive_number,
        help="Also a wall-clock limit: samples cost their recorded seconds. With --allocator deadline "
        "the planner picks each draw's question, backend (one --bank per backend) and batch size.",
    ),
]

ReplayGreedyOpt = Annotated[
    bool,
    typer.Option(
        rich_help_panel=ALLOCATION, help="Spend one sample per question on the greedy answer as evidence."
    ),
]

SeedsOpt = Annotated[
    int,
    typer.Option(rich_help_panel=BANK, min=1, help="Shuffles of each question's samples to average over."),
]

TableOpt = Annotated[
    Path | None,
    typer.Option(
        rich_help_panel=BANK,
        metavar="FILE",
        help="Calibration table for --allocator compute_optimal (`bank calibrate`).",
    ),
]

QuotaFactorOpt = Annotated[
    float | None,
    typer.Option(
        rich_help_panel=ALLOCATION,
        parser=positive_number,
        help="difficulty/online: cap each later sample at this x the longest probe sample's tokens.",
    ),
]

ReplayConfidenceWeightOpt = Annotated[
    float | None,
    typer.Option(
        rich_help_panel=VOTES,
        help="Weigh each vote by exp(B x its mean_logprob) (banks recorded by `bank record` carry it) "
        "and let a sure greedy answer lower its question's priority; also reports the oracle that may "
        "count each question by this vote (oracle_any_vote_accuracy).",
    ),
]

GreedyWeightOpt = Annotated[
    float,
    typer.Option(
        rich_help_panel=ALLOCATION, help="How many samples the greedy vote is worth (with --greedy)."
    ),
]

ReplayVerifierWeightOpt = Annotated[
    float | None,
    typer.Option(
        rich_help_panel=VOTES,
        help="Weigh each vote by exp(V x its answer's verifier_score) (`bank score` adds the model's "
        "likelihood of each answer); also reports the oracle that may count each question by this "
        "vote (oracle_any_vote_accuracy).",
    ),
]

RequestSecondsOpt = Annotated[
    float,
    typer.Option(
        rich_help_panel=BUDGETS,
        min=0.0,
        help="--allocator deadline with --budget-seconds: fixed seconds each request costs its backend "
        "on top of its samples (HTTP latency, prompt processing); batching pays when it is high.",
    ),
]
