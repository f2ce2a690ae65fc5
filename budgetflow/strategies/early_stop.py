"""`early_stop`: adaptive consistency. Sample in rounds; stop once the leading answer is settled.

Stopping rules (pure functions of the answer counts):

* `beta` (default, Adaptive-Consistency's Beta criterion): with the two largest counts a >= b,
  the probability that the leader is truly more likely than the runner-up is
  P(X > 1/2) for X ~ Beta(a + 1, b + 1); stop when it reaches `confidence`.
* `margin`: stop when a - b >= `margin`.

Sampling also stops at `max_samples`. The answer is the majority of everything drawn.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from budgetflow.answers.voting import (
    PLAIN_VOTING,
    STRATEGY_STOP_CONFIDENCE,
    Evidence,
    answer_key,
    leader_settled,
    majority_answer,
    top_two,
)
from budgetflow.errors import ConfigError
from budgetflow.strategies.base import Decision, Draw, Finish, Sample

__all__ = ["EarlyStop", "top_two_counts"]


def top_two_counts(answers: Sequence[str | None]) -> tuple[int, int]:
    """The leader's and the runner-up's plain vote counts among `answers`."""
    ballots = Evidence(answers=[answer_key(answer) for answer in answers])
    leader, runner_up = top_two(PLAIN_VOTING.votes(ballots))
    return round(leader), round(runner_up)


@dataclass(frozen=True, slots=True, kw_only=True)
class EarlyStop:
    """Draw `batch` samples per round, up to `max_samples`, until the stopping rule is met."""

    max_samples: int = 8
    batch: int = 2
    temperature: float = 0.5
    rule: Literal["beta", "margin"] = "beta"
    confidence: float = STRATEGY_STOP_CONFIDENCE
    margin: int = 3

    def __post_init__(self) -> None:
        if self.max_samples < 1 or self.batch < 1:
            raise ConfigError("early_stop needs max_samples >= 1 and batch >= 1")
        if self.rule not in ("beta", "margin"):
            raise ConfigError(f"early_stop rule must be 'beta' or 'margin', got {self.rule!r}")
        if not 0.5 < self.confidence < 1:
            raise ConfigError(f"early_stop confidence must be in (0.5, 1), got {self.confidence}")

    @property
    def name(self) -> str:
        return f"early_stop@{self.max_samples}"

    def settled(self, samples: Sequence[Sample]) -> bool:
        leader, runner_up = top_two_counts([s.answer for s in samples])
        if self.rule == "margin":
            return leader > 0 and leader - runner_up >= self.margin
        return leader_settled(leader, runner_up, self.confidence)

    def decide(self, samples: Sequence[Sample]) -> Decision:
        if len(samples) < self.max_samples and not self.settled(samples):
            return Draw(n=min(self.batch, self.max_samples - len(samples)), temperature=self.temperature)
        answer, votes = majority_answer([s.answer for s in samples])
        why = "answer settled" if self.settled(samples) else "sample limit reached"
        return Finish(answer=answer, reason=f"{why} after {len(samples)} samples", votes=votes)
