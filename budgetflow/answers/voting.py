"""Voting: the one place answers are counted, for strategies and allocators alike.

`Evidence` is what has been observed for one question (normalised answers, their confidences
and verifier scores, the greedy answer); `Voting` says how those ballots count; `final_answer`
picks the winner (ties go to the greedy answer, then to the answer seen first). The
self-consistency strategies use `majority_answer` (plain votes over raw answer texts), which is
`final_answer` under plain `Voting`.

The early-stop rule is `leader_settled`: with leader count a and runner-up b, the leader is
settled when P(Beta(a + 1, b + 1) > 1/2) reaches the confidence asked for (Adaptive-Consistency).
The `early_stop` strategy (default confidence `STRATEGY_STOP_CONFIDENCE`) and the `early_stop`
allocator (`ALLOCATOR_STOP_CONFIDENCE`) both stop by it; their defaults differ because each was
chosen on its own benchmark (see README).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from math import comb

from budgetflow.answers.equivalence import normalize_answer

__all__ = [
    "ALLOCATOR_STOP_CONFIDENCE",
    "STRATEGY_STOP_CONFIDENCE",
    "Evidence",
    "Voting",
    "answer_key",
    "final_answer",
    "leader_confidence",
    "leader_settled",
    "majority_answer",
    "top_two",
]

#: The `early_stop` strategy's default confidence (chosen on the strategy benchmarks).
STRATEGY_STOP_CONFIDENCE = 0.95
#: The `early_stop` allocator's default confidence (chosen on the bank of benchmarks/allocation.py).
ALLOCATOR_STOP_CONFIDENCE = 0.85


def answer_key(answer: str | None) -> str | None:
    """The normalised form answers are counted by (None stays None: no answer stated)."""
    return None if answer is None else normalize_answer(answer)


@dataclass(slots=True)
class Evidence:
    """What has been observed for one question: normalised answers (None = no answer stated),
    when the backend reported them each sample's mean token log-probability, and when a verifier
    scored them each answer's score."""

    answers: list[str | None] = field(default_factory=list)
    confidences: list[float | None] = field(default_factory=list)
    scores: dict[str, float] = field(default_factory=dict)
    greedy: str | None = None
    greedy_confidence: float | None = None
    used_greedy: bool = False
    tokens: int = 0
    longest: int = 0
    seconds: float = 0.0

    def add(self, answer: str | None, confidence: float | None = None, score: float | None = None) -> None:
        self.answers.append(answer)
        self.confidences.append(confidence)
        self._score(answer, score)

    def set_greedy(
        self, answer: str | None, confidence: float | None = None, score: float | None = None
    ) -> None:
        """The greedy answer is in: it votes (see `Voting`) and breaks ties."""
        self.used_greedy, self.greedy, self.greedy_confidence = True, answer, confidence
        self._score(answer, score)

    def _score(self, answer: str | None, score: float | None) -> None:
        if answer is not None and score is not None:
            self.scores[answer] = score


@dataclass(frozen=True, slots=True, kw_only=True)
class Voting:
    """How votes count: the greedy answer (when used) weighs `greedy_weight` samples; with
    `confidence_weight` b, a vote with mean token log-probability c weighs exp(b x c); with
    `verifier_weight` v, a vote for an answer the verifier scored s weighs exp(v x s). Weights are
    rescaled to average 1 (counts stay on the scale of samples). Each weighting applies only when
    every vote of the question carries its number (a log-probability, a verifier score)."""

    greedy_weight: float = 1.0
    confidence_weight: float | None = None
    verifier_weight: float | None = None

    def votes(self, evidence: Evidence) -> dict[str, float]:
        ballots = [(a, c, 1.0) for a, c in zip(evidence.answers, _padded(evidence), strict=True)]
        if evidence.used_greedy:
            ballots.append((evidence.greedy, evidence.greedy_confidence, self.greedy_weight))
        stated = [(a, c, w) for a, c, w in ballots if a is not None]
        weights = [w for _, _, w in stated]
        exponents = [0.0] * len(stated)
        if self.confidence_weight is not None and all(c is not None for _, c, _ in stated):
            exponents = [self.confidence_weight * (c or 0.0) for _, c, _ in stated]
        if self.verifier_weight is not None and all(a in evidence.scores for a, _, _ in stated):
            scores = [self.verifier_weight * evidence.scores[a or ""] for a, _, _ in stated]
            exponents = [e + s for e, s in zip(exponents, scores, strict=True)]
        if stated and any(exponents):
            top = max(exponents)  # exp of the difference: no overflow for long, unlikely answers
            raw = [w * math.exp(e - top) for w, e in zip(weights, exponents, strict=True)]
            weights = [r * sum(weights) / sum(raw) for r in raw]
        counts: dict[str, float] = {}
        for (answer, _, _), weight in zip(stated, weights, strict=True):
            assert answer is not None
            counts[answer] = counts.get(answer, 0.0) + weight
        return counts


def _padded(evidence: Evidence) -> list[float | None]:
    missing = len(evidence.answers) - len(evidence.confidences)
    return [*evidence.confidences, *([None] * missing)]


def final_answer(evidence: Evidence, voting: Voting) -> str | None:
    """The answer with the most votes; ties go to the greedy answer, then to the first answer seen."""
    counts = voting.votes(evidence)
    if not counts:
        return None
    best = max(counts.values())
    tied = [answer for answer, count in counts.items() if count >= best - 1e-9]
    if evidence.used_greedy and evidence.greedy in tied:
        return evidence.greedy
    order = [a for a in evidence.answers if a is not None]
    return min(tied, key=lambda a: order.index(a) if a in order else len(order))


#: One vote per stated answer.
PLAIN_VOTING = Voting()


def majority_answer(answers: Sequence[str | None]) -> tuple[str | None, int]:
    """The most frequent answer (by normalised form, as first written) and its count; ties go to
    the earliest first occurrence. Answers that are None do not vote."""
    keys = [answer_key(answer) for answer in answers]
    evidence = Evidence(answers=keys)
    best = final_answer(evidence, PLAIN_VOTING)
    if best is None:
        return None, 0
    first_text = next(text for text, key in zip(answers, keys, strict=True) if key == best)
    return first_text, round(PLAIN_VOTING.votes(evidence)[best])


def top_two(counts: dict[str, float]) -> tuple[float, float]:
    """The leader's and the runner-up's vote counts (0 when absent)."""
    ranked = [*sorted(counts.values(), reverse=True), 0.0, 0.0]
    return ranked[0], ranked[1]


def leader_confidence(leader: int, runner_up: int) -> float:
    """P(X > 1/2) for X ~ Beta(leader + 1, runner_up + 1), exactly.

    For integer parameters a, b: P(Beta(a, b) > 1/2) = P(Binomial(a + b - 1, 1/2) <= a - 1).
    """
    a, b = leader + 1, runner_up + 1
    trials = a + b - 1
    return float(sum(comb(trials, j) for j in range(a)) / 2**trials)


def leader_settled(leader: float, runner_up: float, confidence: float) -> bool:
    """The early-stop rule: the leader has votes and P(Beta(a + 1, b + 1) > 1/2) >= `confidence`
    (weighted counts are rounded to whole votes)."""
    return leader > 0 and leader_confidence(round(leader), round(runner_up)) >= confidence
