"""`single`: one greedy completion; its answer is final."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from budgetflow.strategies.base import Decision, Draw, Finish, Sample

__all__ = ["Single"]

_GREEDY = Draw(n=1, temperature=0.0)  # decisions are frozen: every greedy unit may share one


@dataclass(frozen=True, slots=True, kw_only=True)
class Single:
    """Greedy decoding (temperature 0 unless set), one sample."""

    temperature: float = 0.0

    @property
    def name(self) -> str:
        return "single"

    def decide(self, samples: Sequence[Sample]) -> Decision:
        if not samples:
            return _GREEDY if self.temperature == 0.0 else Draw(n=1, temperature=self.temperature)
        return Finish(answer=samples[0].answer, reason="one sample drawn", votes=1)
