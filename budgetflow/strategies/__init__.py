"""Test-time strategies: pure policies over observed samples."""

from budgetflow.answers.voting import majority_answer
from budgetflow.strategies.base import Decision, Draw, Finish, Sample, Strategy
from budgetflow.strategies.parse import parse_strategy
from budgetflow.strategies.single import Single
from budgetflow.strategies.vote import Vote

__all__ = [
    "Decision",
    "Draw",
    "Finish",
    "Sample",
    "Single",
    "Strategy",
    "Vote",
    "majority_answer",
    "parse_strategy",
]
