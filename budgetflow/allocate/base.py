"""The allocator protocol: pure planning over observed evidence. Which question gets the next sample?

An allocator sees, per question, the `Evidence` drawn so far and answers three things: how many
samples to probe every question with first (`probe`), whether to spend one sample per question
on a greedy answer (`use_greedy`), and, after that, each question's `priority` (0 = draw no
more) and the `quota` (max_tokens) of its next sample. It never sends anything: the live loops
(`budgetflow.evaluate.allocated`, `budgetflow.evaluate.allocated_lanes`) and the bank simulator
(`budgetflow.evaluate.simulate`) do the drawing, so one allocator serves all three.

`AllocatorBase` holds what the built-in allocators share (greedy doubt, verifier doubt, token
quotas); `budgetflow.allocate.registry` maps names to allocators.

Marginal gain of one more sample for majority voting, from the answer clusters (leader count a,
runner-up b, n votes): the leader is unsettled with probability 1 - P(Beta(a+1, b+1) > 1/2), and
the question is solvable by voting with probability about (a + 1) / (n + 2) (a question whose
samples all disagree has no mode to find). Their product is the priority: spend where answers
disagree but a mode is forming; leave settled and hopeless questions alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol

from budgetflow.answers.voting import Evidence, Voting, final_answer, leader_confidence, top_two
from budgetflow.errors import ConfigError

__all__ = [
    "Allocator",
    "AllocatorBase",
    "AllocatorOptions",
    "leader_odds",
    "marginal_gain",
]


class Allocator(Protocol):
    """What the live loops and the simulator need of an allocator."""

    @property
    def name(self) -> str: ...

    @property
    def probe(self) -> int:
        """Samples every question gets before priorities count."""
        ...

    @property
    def use_greedy(self) -> bool:
        """Spend one sample per question on a greedy answer, which votes."""
        ...

    @property
    def adaptive(self) -> bool:
        """False: the budget is spread evenly and `priority` is not consulted."""
        ...

    @property
    def cap(self) -> int | None:
        """At most this many samples for one question (None: no cap)."""
        ...

    @property
    def voting(self) -> Voting: ...

    def priority(self, evidence: Evidence) -> float:
        """How much this question deserves its next sample; 0: no more samples."""
        ...

    def quota(self, evidence: Evidence) -> int | None:
        """max_tokens for this question's next sample (None: the run's own)."""
        ...

    def doubt(self, evidence: Evidence) -> float:
        """A factor in [0, 1] lowering a question's gain when its greedy answer was sure."""
        ...

    def verifier_doubt(self, evidence: Evidence) -> float | None:
        """The verifier's doubt about the leading answer, when votes are verifier-weighted."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class AllocatorOptions:
    """What a user may set on any allocator (each uses what applies to it).

    `confidence_weight` b weighs each vote by exp(b x its mean token log-probability) and, with
    `use_greedy`, lets the greedy answer's own confidence lower its question's priority;
    `verifier_weight` v weighs each vote by exp(v x its answer's verifier score)."""

    use_greedy: bool = False
    cap: int = 16
    stop_confidence: float | None = None
    hopeless_after: int = 4
    bin_targets: tuple[int, ...] | None = None
    quota_factor: float | None = None
    confidence_weight: float | None = None
    greedy_weight: float = 1.0
    verifier_weight: float | None = None

    def __post_init__(self) -> None:
        if self.cap < 1:
            raise ConfigError(f"an allocator's cap must be >= 1, got {self.cap}")
        if self.quota_factor is not None and self.quota_factor <= 0:
            raise ConfigError(f"quota_factor must be > 0, got {self.quota_factor}")

    def voting(self) -> Voting:
        return Voting(
            greedy_weight=self.greedy_weight,
            confidence_weight=self.confidence_weight,
            verifier_weight=self.verifier_weight,
        )

    def greedy_doubt(self) -> float | None:
        """With confidence-weighted votes, a sure greedy answer lowers its question's priority."""
        return 2.0 if self.confidence_weight is not None else None


def leader_odds(evidence: Evidence, voting: Voting) -> tuple[float, float]:
    """(P(the leader is unsettled), P(a sample joins the leader)) from the answer clusters: leader
    count a, runner-up b, n votes: 1 - P(Beta(a+1, b+1) > 1/2) and (a + 1) / (n + 2)."""
    counts = voting.votes(evidence)
    leader, runner_up = top_two(counts)
    total = sum(counts.values()) + evidence.answers.count(None)
    unsettled = 1.0 - leader_confidence(round(leader), round(runner_up))
    return unsettled, (leader + 1) / (total + 2)


def marginal_gain(evidence: Evidence, voting: Voting) -> float:
    unsettled, joins = leader_odds(evidence, voting)
    return unsettled * joins


@dataclass(frozen=True, slots=True, kw_only=True)
class AllocatorBase:
    """Shared by the built-in allocators. Subclasses define `priority`."""

    name: str
    probe: int = 0
    use_greedy: bool = False
    voting: Voting = field(default_factory=Voting)
    cap: int | None = None
    quota_factor: float | None = None
    greedy_doubt: float | None = None

    @property
    def adaptive(self) -> bool:
        return True

    def priority(self, evidence: Evidence) -> float:
        raise NotImplementedError(f"{type(self).__name__} must define priority()")

    def doubt(self, evidence: Evidence) -> float:
        """(1 - q)^greedy_doubt, q = exp(the greedy answer's mean token log-probability), the
        geometric-mean probability of its tokens: a question whose greedy answer the model was
        sure of attracts less budget. 1 when unused or unknown."""
        if self.greedy_doubt is None or not evidence.used_greedy or evidence.greedy_confidence is None:
            return 1.0
        return float((1.0 - math.exp(min(0.0, evidence.greedy_confidence))) ** self.greedy_doubt)

    def verifier_doubt(self, evidence: Evidence) -> float | None:
        """With verifier-weighted votes: 1 - exp(the leading answer's verifier score), the chance
        that the model would not state the leader (for a likelihood verifier); None when votes are
        not verifier-weighted or the leader is unscored. Agreement is no proof with a verifier:
        samples that copy a few-shot example's answer agree on it, and the verifier doubts it."""
        if self.voting.verifier_weight is None:
            return None
        leader = final_answer(evidence, self.voting)
        if leader is None or leader not in evidence.scores:
            return None
        return 1.0 - math.exp(min(0.0, evidence.scores[leader]))

    def quota(self, evidence: Evidence) -> int | None:
        """max_tokens for this question's next sample: `quota_factor` x its longest probe sample once
        probed (short answers stay short, as in DRQA / SCALE), None before or when quotas are off."""
        if self.quota_factor is None or len(evidence.answers) < max(1, self.probe) or evidence.longest == 0:
            return None
        return max(1, math.ceil(self.quota_factor * evidence.longest))

    def gain(self, evidence: Evidence) -> float:
        """Expected gain of one more sample: the verifier's doubt per sample drawn when votes are
        verifier-weighted, else the marginal gain of majority voting; times the greedy doubt."""
        verified = self.verifier_doubt(evidence)
        if verified is not None:
            return verified / (1 + len(evidence.answers)) * self.doubt(evidence)
        return marginal_gain(evidence, self.voting) * self.doubt(evidence)
