"""What every `budgetflow` command shares: the two consoles and how a failure ends the command."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.markup import escape

from budgetflow.errors import BudgetflowError, UserInputError

__all__ = ["console", "exit_for", "stdout"]

#: Progress, errors and notes go to stderr; tables and JSON to stdout.
console = Console(stderr=True)
stdout = Console()


def exit_for(exc: BudgetflowError) -> typer.Exit:
    """Print the error and return the exit to raise: 2 for a user mistake, 1 for a runtime failure."""
    user_error = isinstance(exc, UserInputError)
    console.print(f"[red]{'error' if user_error else 'failed'}:[/red] {escape(str(exc))}", emoji=False)
    return typer.Exit(2 if user_error else 1)
