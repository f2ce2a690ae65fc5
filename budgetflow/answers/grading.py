"""Graders decide whether a predicted answer to a question is correct."""

from __future__ import annotations

from typing import Protocol

from budgetflow.answers.equivalence import answers_match
from budgetflow.types import Question

__all__ = ["Grader", "MatchGrader"]


class Grader(Protocol):
    """Scores a predicted answer to `question`: 1.0 correct, 0.0 wrong (partial credit allowed)."""

    def grade(self, predicted: str | None, question: Question) -> float: ...


class MatchGrader:
    """Numeric equivalence when both sides are numbers, normalised exact match otherwise."""

    def grade(self, predicted: str | None, question: Question) -> float:
        return 1.0 if answers_match(predicted, question.gold) else 0.0
