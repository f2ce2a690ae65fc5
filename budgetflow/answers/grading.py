"""Graders decide whether a predicted answer to a question is correct.

Grading is asynchronous: a grader may compare answers symbolically in a worker process
(`MathGrader`), and a run's event loop must never wait on SymPy.
"""

from __future__ import annotations

from typing import Protocol

from budgetflow.answers.equivalence import answers_match, parse_number
from budgetflow.answers.symbolic import SymbolicEquivalence
from budgetflow.types import Question

__all__ = ["Grader", "MatchGrader", "MathGrader"]


class Grader(Protocol):
    """Scores a predicted answer to `question`: 1.0 correct, 0.0 wrong (partial credit allowed)."""

    async def grade(self, predicted: str | None, question: Question) -> float: ...


class MatchGrader:
    """The same number, else the same canonical text (`budgetflow.answers.equivalence`)."""

    async def grade(self, predicted: str | None, question: Question) -> float:
        return 1.0 if answers_match(predicted, question.gold) else 0.0


class MathGrader:
    """`MatchGrader`'s test first; answers it cannot tell apart as numbers go to math-verify."""

    def __init__(self, equivalence: SymbolicEquivalence | None = None) -> None:
        self.equivalence = equivalence or SymbolicEquivalence()

    async def grade(self, predicted: str | None, question: Question) -> float:
        if predicted is None:
            return 0.0
        if answers_match(predicted, question.gold):
            return 1.0
        if parse_number(predicted) is not None and parse_number(question.gold) is not None:
            return 0.0  # two different numbers: nothing symbolic to find
        return 1.0 if await self.equivalence.equal(question.gold, predicted) else 0.0
