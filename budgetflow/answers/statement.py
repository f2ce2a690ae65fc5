"""How a reply states an answer, for the likelihood verifier (`budgetflow.strategies.verifiers`)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["AnswerStatement"]


@dataclass(frozen=True, slots=True, kw_only=True)
class AnswerStatement:
    """How a reply states an answer, for a likelihood verifier: the reply's opening (`opening`,
    with `{question}`, the same for every candidate) and the answer's own text (`answer`, with
    `{answer}`), whose log-probability after the opening ranks the candidates."""

    opening: str = ""
    answer: str = "The answer is {answer}."

    def opening_for(self, question: str) -> str:
        return self.opening.format(question=question)

    def texts(self, answers: list[str]) -> list[str]:
        """The texts the verifier scores for `answers` (normalised), in order."""
        return [self.answer.format(answer=answer) for answer in answers]
