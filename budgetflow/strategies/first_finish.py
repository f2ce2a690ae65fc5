"""`first_finish`: First Finish Search. Start `n` samples, keep the first `k` to finish, stop the rest.

Shorter reasoning traces are more often correct on many tasks, and stopping the long tail saves
the tokens it would have generated. With `k > 1` the kept samples vote.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from budgetflow.answers.voting import majority_answer
from budgetflow.errors import ConfigError
from budgetflow.strategies.base import Decision, Draw, Finish, Sample

__all__ = ["FirstFinish"]


@dataclass(frozen=True, slots=True, kw_only=True)
class FirstFinish:
    """Launch `n` samples at `temperature`; the first `k` to finish decide (majority when k > 1)."""

    n: int = 8
    k: int = 1
    temperature: float = 0.5

    def __post_init__(self) -> None:
        if not 1 <= self.k <= self.n:
            raise ConfigError(f"first_finish needs 1 <= k <= n, got k={self.k}, n={self.n}")

    @property
    def name(self) -> str:
        return f"first_finish@{self.n}" + (f"k{self.k}" if self.k > 1 else "")

    def decide(self, samples: Sequence[Sample]) -> Decision:
        if not samples:
            return Draw(n=self.n, temperature=self.temperature, keep_first=self.k)
        answer, votes = majority_answer([s.answer for s in samples])
        return Finish(answer=answer, reason=f"first {len(samples)} of {self.n} to finish", votes=votes)
