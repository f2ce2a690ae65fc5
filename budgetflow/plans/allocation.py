"""Budget across a plan's nodes by the allocator protocol that splits it across questions.

A node whose strategy is `allocate` draws its samples one at a time under the plan's allocator
(`uniform`, `difficulty`, `online`, `early_stop`, …, see `budgetflow.allocate`): its probe
samples (and greedy answer, if the allocator uses one) first, then one more while the
allocator's priority for its evidence is at least `min_gain` and it is under the cap. A node
whose samples agree has a low priority and stops early, leaving its budget to the nodes after
it; a node whose samples disagree keeps drawing past the uniform share. The allocator only
plans: `AllocatedStrategy` is a strategy like any other, run by the execution core's
`run_strategy`, and its unit's budget comes from `node_budget`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from budgetflow.allocate import Allocator, make_allocator
from budgetflow.answers.voting import Evidence, answer_key, majority_answer
from budgetflow.errors import ConfigError
from budgetflow.strategies.base import Decision, Draw, Finish, Sample

__all__ = ["ALLOCATE", "AllocatedStrategy", "PlanAllocator", "node_budget"]

#: The strategy name of a node whose samples the plan's allocator decides.
ALLOCATE = "allocate"
_GREEDY = "greedy"


@dataclass(frozen=True, slots=True)
class PlanAllocator:
    """How a plan's `allocate` nodes share its budget: the allocator, the most samples one node
    may draw (`cap`), the priority below which a node is settled (`min_gain`), the sampling
    temperature, and the fraction of an equal share kept back for each node not yet finished
    (`reserve`) when one node draws past its own."""

    name: str = "online"
    cap: int = 12
    min_gain: float = 0.05
    temperature: float = 0.7
    use_greedy: bool = False
    reserve: float = 0.5

    def __post_init__(self) -> None:
        if self.cap < 1:
            raise ConfigError(f"allocator cap must be >= 1, got {self.cap}")
        if not 0 <= self.min_gain < 1:
            raise ConfigError(f"allocator min_gain must be in [0, 1), got {self.min_gain}")
        if not 0 <= self.reserve <= 1:
            raise ConfigError(f"allocator reserve must be in [0, 1], got {self.reserve}")
        if self.temperature < 0:
            raise ConfigError(f"allocator temperature must be >= 0, got {self.temperature}")

    def build(self) -> Allocator:
        return make_allocator(self.name, use_greedy=self.use_greedy, cap=self.cap)

    def strategy(self) -> AllocatedStrategy:
        return AllocatedStrategy(
            self.build(), cap=self.cap, min_gain=self.min_gain, temperature=self.temperature
        )


@dataclass(frozen=True, slots=True)
class AllocatedStrategy:
    """A node's samples, one at a time, as the allocator's priority asks (a pure strategy)."""

    allocator: Allocator
    cap: int = 12
    min_gain: float = 0.05
    temperature: float = 0.7

    @property
    def name(self) -> str:
        return f"{ALLOCATE}:{self.allocator.name}"

    def decide(self, samples: Sequence[Sample]) -> Decision:
        evidence = _evidence(samples)
        drawn = len(evidence.answers)
        if self.allocator.use_greedy and not evidence.used_greedy:
            return Draw(n=1, temperature=0.0, tag=_GREEDY)
        cap = min(self.cap, self.allocator.cap or self.cap)
        if drawn < max(self.allocator.probe, 0 if evidence.used_greedy else 1):
            return self._draw(evidence)
        if drawn >= cap:
            return self._finish(samples, f"the cap of {cap} samples")
        if not self.allocator.adaptive:
            return self._draw(evidence)  # uniform: its equal share, up to the cap
        priority = self.allocator.priority(evidence)
        if priority < self.min_gain:
            return self._finish(samples, f"settled: priority {priority:.3f} after {drawn} samples")
        return self._draw(evidence)

    def _draw(self, evidence: Evidence) -> Draw:
        return Draw(n=1, temperature=self.temperature, max_tokens=self.allocator.quota(evidence))

    def _finish(self, samples: Sequence[Sample], why: str) -> Finish:
        answer, votes = majority_answer([sample.answer for sample in samples])
        return Finish(answer=answer, reason=f"{self.allocator.name}: {why}", votes=votes)


def _evidence(samples: Sequence[Sample]) -> Evidence:
    evidence = Evidence()
    for sample in samples:
        if sample.tag == _GREEDY:
            evidence.set_greedy(answer_key(sample.answer))
        else:
            evidence.add(answer_key(sample.answer))
        evidence.tokens += sample.completion_tokens
        evidence.longest = max(evidence.longest, sample.completion_tokens)
    return evidence


def node_budget(headroom: float | None, unfinished_others: int, reserve: float) -> int | None:
    """An `allocate` node's token budget: what is left of the plan's, less `reserve` x an equal
    share for each other node not finished yet (None: the plan has no token budget)."""
    if headroom is None:
        return None
    equal = headroom / (unfinished_others + 1)
    return max(0, int(headroom - reserve * equal * unfinished_others))
