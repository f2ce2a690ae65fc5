"""`best_of_n`: draw `n` samples, score each with a verifier, answer with the best.

`aggregate="max"` takes the answer of the highest-scoring sample (ties: the earliest);
`aggregate="weighted"` sums the scores of each answer (weighted majority vote).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from budgetflow.answers.equivalence import normalize_answer
from budgetflow.errors import ConfigError
from budgetflow.strategies.base import Decision, Draw, Finish, Sample, Verifier, Verify

__all__ = ["BestOfN", "weighted_majority"]


def weighted_majority(samples: Sequence[Sample]) -> tuple[str | None, float]:
    """The answer with the largest total score (ties: first seen), and that total."""
    totals: dict[str, float] = {}
    first_text: dict[str, str] = {}
    for sample in samples:
        if sample.answer is None:
            continue
        key = normalize_answer(sample.answer)
        totals[key] = totals.get(key, 0.0) + (sample.score or 0.0)
        first_text.setdefault(key, sample.answer)
    if not totals:
        return None, 0.0
    best = max(totals, key=lambda key: totals[key])
    return first_text[best], totals[best]


@dataclass(frozen=True, slots=True, kw_only=True)
class BestOfN:
    """`n` samples at `temperature`, scored by `verifier`."""

    verifier: Verifier
    n: int = 8
    temperature: float = 0.5
    aggregate: Literal["max", "weighted"] = "max"

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ConfigError(f"best_of_n needs n >= 1, got {self.n}")
        if self.aggregate not in ("max", "weighted"):
            raise ConfigError(f"best_of_n aggregate must be 'max' or 'weighted', got {self.aggregate!r}")

    @property
    def name(self) -> str:
        return f"best_of_n@{self.n}" + ("w" if self.aggregate == "weighted" else "")

    def decide(self, samples: Sequence[Sample]) -> Decision:
        if len(samples) < self.n:
            return Draw(n=self.n - len(samples), temperature=self.temperature)
        unscored = tuple(i for i, s in enumerate(samples) if s.score is None)
        if unscored:
            return Verify(indices=unscored, verifier=self.verifier)
        if self.aggregate == "weighted":
            answer, total = weighted_majority(samples)
            return Finish(
                answer=answer, reason=f"weighted vote of {len(samples)} scored samples (total {total:.2f})"
            )
        best = max(range(len(samples)), key=lambda i: (samples[i].score or 0.0, -i))
        score = samples[best].score or 0.0
        return Finish(
            answer=samples[best].answer, reason=f"highest verifier score {score:.2f} of {len(samples)}"
        )
