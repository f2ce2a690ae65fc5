"""Allocators: pure planning over observed evidence. Which question gets the next sample?

Each allocator sees, per question, the answers drawn so far (and the greedy answer when it uses
one) and returns a priority; the simulator (or executor) does the drawing. Allocators:

* `uniform`     the same number of samples everywhere (the baseline);
* `difficulty`  probe every question with `probe` samples, then hand out the rest by estimated
                marginal gain (below);
* `online`      no probe phase beyond one sample (none with the greedy answer as evidence: it
                is the first): re-allocate after every sample, by answer clusters rather than
                raw samples, so a question whose samples agree stops attracting budget (Every
                Rollout Counts' direction-level view);
* `deadline`    like `online`, but by gain per expected second (each question's observed seconds
                per sample), for runs with a wall-clock deadline as well as a budget (On Time,
                Within Budget): slow questions must earn their time;
* `early_stop`  every question samples until its leader is settled (Beta rule at 0.85; with a
                verifier, also not doubted by it), `cap` is hit, or its first four samples all
                disagree (no mode is forming: more rarely helps).

With verifier-weighted votes (`Voting.verifier_weight`) an adaptive allocator's priority is the
verifier's doubt about the leading answer over (1 + samples drawn): samples spread evenly except
where the verifier is sure of the leader (`Allocator.verifier_doubt`).

Marginal gain of one more sample for majority voting, from the answer clusters (leader count a,
runner-up b, n votes): the leader is unsettled with probability 1 - P(Beta(a+1, b+1) > 1/2), and
the question is solvable by voting with probability about (a + 1) / (n + 2) (a question whose
samples all disagree has no mode to find). Their product is the priority: spend where answers
disagree but a mode is forming; leave settled and hopeless questions alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from budgetflow.answers.equivalence import normalize_answer
from budgetflow.errors import ConfigError
from budgetflow.strategies.early_stop import leader_confidence

__all__ = [
    "ALLOCATORS",
    "Allocator",
    "Evidence",
    "Voting",
    "answer_key",
    "final_answer",
    "leader_odds",
    "make_allocator",
    "marginal_gain",
]


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


def leader_odds(evidence: Evidence, voting: Voting) -> tuple[float, float]:
    """(P(the leader is unsettled), P(a sample joins the leader)) from the answer clusters: leader
    count a, runner-up b, n votes: 1 - P(Beta(a+1, b+1) > 1/2) and (a + 1) / (n + 2)."""
    counts = [*sorted(voting.votes(evidence).values(), reverse=True), 0.0, 0.0]
    total = sum(counts) + evidence.answers.count(None)
    unsettled = 1.0 - leader_confidence(round(counts[0]), round(counts[1]))
    return unsettled, (counts[0] + 1) / (total + 2)


def marginal_gain(evidence: Evidence, voting: Voting) -> float:
    unsettled, joins = leader_odds(evidence, voting)
    return unsettled * joins


@dataclass(frozen=True, slots=True, kw_only=True)
class Allocator:
    """`probe` samples per question first, then by priority; `use_greedy` spends one sample per
    question on a greedy answer that votes with `greedy_weight`."""

    name: str
    probe: int = 0
    use_greedy: bool = False
    voting: Voting = Voting()
    adaptive: bool = True
    cap: int | None = None
    stop_confidence: float | None = None
    hopeless_after: int = 4
    bin_targets: tuple[int, ...] | None = None
    quota_factor: float | None = None
    per_second: bool = False
    greedy_doubt: float | None = None
    stop_doubt: float | None = None

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

    def priority(self, evidence: Evidence) -> float:
        if not self.adaptive:
            return 0.0
        drawn = len(evidence.answers)
        if self.bin_targets is not None:
            from budgetflow.allocate.compute_optimal import probe_bin

            return 1.0 / (1 + drawn) if drawn < self.bin_targets[probe_bin(evidence)] else 0.0
        if self.cap is not None and drawn >= self.cap:
            return 0.0
        if self.stop_confidence is not None:
            counts = [*sorted(self.voting.votes(evidence).values(), reverse=True), 0, 0]
            settled = leader_confidence(round(counts[0]), round(counts[1])) >= self.stop_confidence
            doubt = self.verifier_doubt(evidence)
            if self.stop_doubt is not None and doubt is not None and doubt > self.stop_doubt:
                settled = False  # the votes agree, but the verifier doubts their answer: go on
            hopeless = drawn >= self.hopeless_after and counts[0] <= 1
            return 0.0 if settled or hopeless else 1.0 / (1 + drawn)
        verified = self.verifier_doubt(evidence)
        if verified is not None:
            gain = verified / (1 + drawn) * self.doubt(evidence)
        else:
            gain = marginal_gain(evidence, self.voting) * self.doubt(evidence)
        if self.per_second and drawn:
            return gain / max(evidence.seconds / drawn, 1e-6)  # gain per expected second of this question
        return gain


#: early_stop with verifier-weighted votes does not stop while the verifier's doubt about the
#: leader exceeds this. Chosen on the embedded-model bank of benchmarks/allocation.py (0.95: -72%
#: tokens vs vote@16 at +3.4 points; 0.9: -51% at +4.1; no gate: -74% at +1.7); data dependent.
EARLY_STOP_DOUBT = 0.95

ALLOCATORS = ("uniform", "difficulty", "online", "early_stop", "compute_optimal", "deadline")


def make_allocator(
    name: str,
    *,
    use_greedy: bool = False,
    cap: int = 16,
    stop_confidence: float = 0.85,
    hopeless_after: int = 4,
    bin_targets: tuple[int, ...] | None = None,
    quota_factor: float | None = None,
    confidence_weight: float | None = None,
    greedy_weight: float = 1.0,
    verifier_weight: float | None = None,
) -> Allocator:
    """An allocator by name; `compute_optimal` needs `bin_targets` (from a calibration table).

    early_stop's defaults (stop at Beta confidence 0.85, give up after 4 disagreeing samples) were
    chosen on the embedded-model bank of benchmarks/allocation.py: 60% fewer tokens than vote@16
    for -0.2 points there, where 0.95 and 6 saved 25%. They are data dependent: on questions with
    many near-tied answers, raise both.

    `confidence_weight` b weighs each vote by exp(b x its mean token log-probability) (the samples
    must carry log-probabilities; see `Voting`) and, with `use_greedy`, lets the greedy answer's
    own confidence lower its question's priority (`Allocator.greedy_doubt` = 2).

    `verifier_weight` v weighs each vote by exp(v x its answer's verifier score) (the samples must
    carry scores: `budgetflow bank score`); early_stop then also keeps sampling while the verifier
    doubts the settled leader more than `EARLY_STOP_DOUBT`."""
    voting = Voting(
        greedy_weight=greedy_weight, confidence_weight=confidence_weight, verifier_weight=verifier_weight
    )
    allocator = _named_allocator(
        name, use_greedy, cap, stop_confidence, hopeless_after, bin_targets, quota_factor
    )
    doubt = 2.0 if confidence_weight is not None and allocator.adaptive else None
    stop_doubt = EARLY_STOP_DOUBT if name == "early_stop" and verifier_weight is not None else None
    return replace(allocator, voting=voting, greedy_doubt=doubt, stop_doubt=stop_doubt)


def _named_allocator(
    name: str,
    use_greedy: bool,
    cap: int,
    stop_confidence: float,
    hopeless_after: int,
    bin_targets: tuple[int, ...] | None,
    quota_factor: float | None,
) -> Allocator:
    if name == "uniform":
        return Allocator(name=name, adaptive=False, use_greedy=use_greedy)
    if name == "difficulty":
        return Allocator(name=name, probe=2, use_greedy=use_greedy, quota_factor=quota_factor)
    if name == "online":  # with greedy evidence the greedy answer is the first sample: no probe
        probe = 0 if use_greedy else 1
        return Allocator(name=name, probe=probe, use_greedy=use_greedy, quota_factor=quota_factor)
    if name == "early_stop":
        return Allocator(
            name=name,
            probe=2,
            cap=cap,
            stop_confidence=stop_confidence,
            hopeless_after=hopeless_after,
            use_greedy=use_greedy,
        )
    if name == "deadline":
        return Allocator(
            name=name, probe=1, use_greedy=use_greedy, quota_factor=quota_factor, per_second=True
        )
    if name == "compute_optimal":
        if bin_targets is None:
            raise ConfigError("compute_optimal needs a calibration table (budgetflow bank calibrate)")
        return Allocator(name=name, probe=2, use_greedy=True, bin_targets=bin_targets)
    raise ConfigError(f"unknown allocator {name!r}; known: {', '.join(ALLOCATORS)}")
