"""`vote`: self-consistency. Draw `n` samples, answer with the majority.

Answers are grouped by their normalised form (`1,000` and `1000.0` are one answer). Ties go to the
answer whose first sample came earliest, so the result is deterministic for a given sample order.
Samples that state no answer do not vote.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from budgetflow.answers.voting import majority_answer
from budgetflow.errors import ConfigError
from budgetflow.strategies.base import Decision, Draw, Finish, Sample

__all__ = ["Vote", "majority_answer"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Vote:
    """Self-consistency with `n` samples at `temperature`."""

    n: int = 8
    temperature: float = 0.5

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ConfigError(f"vote needs n >= 1, got {self.n}")
        if self.temperature < 0:
            raise ConfigError(f"vote needs temperature >= 0, got {self.temperature}")

    @property
    def name(self) -> str:
        return f"vote@{self.n}"

    def decide(self, samples: Sequence[Sample]) -> Decision:
        if len(samples) < self.n:
            return Draw(n=self.n - len(samples), temperature=self.temperature)
        answer, votes = majority_answer([s.answer for s in samples])
        reason = f"majority of {len(samples)} samples" if answer is not None else "no sample stated an answer"
        return Finish(answer=answer, reason=reason, votes=votes)
