"""`python -m budgetflow …` is the `budgetflow` command."""

from budgetflow.cli import app

app()
