"""`budgetflow bank tune`: choose the whole allocation policy on your own calibration bank."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from budgetflow.cli_output import console, exit_for, stdout
from budgetflow.errors import BudgetflowError, ConfigError
from budgetflow.evaluate.bank import BankQuestion, load_bank
from budgetflow.evaluate.tune import TuneResult, Variants, tune

__all__ = ["bank_variants", "tune_command"]


def tune_command(
    bank: Annotated[
        list[Path],
        typer.Option(
            help="A calibration bank (JSONL). Repeat: banks of the same questions at different "
            "temperatures make the temperature a choice; banks of different questions are pooled."
        ),
    ],
    output: Annotated[Path, typer.Option(help="Where to write the policy file (JSON).")],
    budget: Annotated[
        list[int] | None, typer.Option(min=1, help="Average samples per question; repeat. Default 2, 4, 8.")
    ] = None,
    seeds: Annotated[int, typer.Option(min=1, help="Shuffles of each bank per replay.")] = 8,
    folds: Annotated[int, typer.Option(min=2, help="Folds for the cross-fitted (held-out) figures.")] = 2,
    per_budget: Annotated[
        bool,
        typer.Option(
            help="Choose a policy for each budget instead of one for all (fits noise more: see "
            "benchmarks/policies.py)."
        ),
    ] = False,
) -> None:
    """Choose allocator, votes, greedy evidence, constants (and temperature) per budget.

    Every candidate is replayed on the bank; the best wins only if it beats uniform sampling with
    greedy evidence by more than noise. The table's held-out column is the procedure cross-fitted
    (chosen on the other folds): quote that one. Apply the file with `budgetflow eval --policy`.
    """
    try:
        variants, groups = bank_variants([load_bank(path) for path in bank])
        result = tune(
            variants,
            budget or [2, 4, 8],
            groups=groups,
            seeds=seeds,
            folds=folds,
            across_budgets=not per_budget,
        )
    except BudgetflowError as exc:
        raise exit_for(exc) from None
    result.table(source=", ".join(str(path) for path in bank)).save(output)
    stdout.print(_table(result))
    stdout.print("chosen on all the questions:\n" + _chosen(result))
    console.print(f"policy written to {output}; apply it with budgetflow eval --policy {output}")


def bank_variants(banks: list[list[BankQuestion]]) -> tuple[Variants, list[int]]:
    """Banks of the same questions keyed by their temperature, or several banks pooled as one
    (with each question's bank index, so that `tune` weighs every bank)."""
    ids = [tuple(q.id for q in bank) for bank in banks]
    if len(banks) == 1 or len(set(ids)) > 1:
        if len(set(ids)) > 1 and any(len(set(a) & set(b)) for a in ids for b in ids if a is not b):
            raise ConfigError("the banks share some questions but not all: give one set of questions")
        groups = [index for index, bank in enumerate(banks) for _ in bank]
        return {None: [q for bank in banks for q in bank]}, groups
    temperatures = [bank[0].temperature for bank in banks]
    if None in temperatures or len(set(temperatures)) < len(temperatures):
        raise ConfigError(
            "banks of the same questions must each record a different temperature "
            f"(their 'temperature' field), got {temperatures}"
        )
    return {bank[0].temperature: bank for bank in banks}, [0] * len(banks[0])


def _table(result: TuneResult) -> Table:
    """Accuracy per budget; the chosen policies are listed under the table (they are long)."""
    table = Table(
        title=f"policies chosen on {result.questions} questions ({result.candidates} candidates)",
        caption="held-out: chosen on the other folds, scored on this one (quote these)",
    )
    columns = ("budget", "in-sample", "held-out", "u+greedy", "uniform", "held-out choices")
    for column in columns:
        table.add_column(column, justify="right" if column != "held-out choices" else "left")
    for report in result.budgets:
        table.add_row(
            f"{report.budget}/q",
            f"{report.in_sample:.1%}",
            f"{report.held_out:.1%}",
            f"{report.baseline_held_out:.1%}",
            f"{report.uniform_held_out:.1%}",
            f"{len(set(report.held_out_choices))} distinct",
        )
    return table


def _chosen(result: TuneResult) -> str:
    return "\n".join(f"  {r.budget}/q: {r.chosen.label}" for r in result.budgets)
