"""Deadline-aware allocation over one or more backends (On Time, Within Budget).

A run has a sample budget and a wall-clock deadline, and may have several backends ("lanes"):
each lane serves one request at a time, lanes run side by side, and every request costs its
lane a fixed `request_seconds` plus its samples' time. Before every draw the planner looks at
each question, each lane and each batch size n and picks the draw with the highest

    expected gain of n more samples  /  (n / samples left  +  seconds / that lane's seconds left)

that fits both limits: the gain per share of the scarcer resources it uses. Batches pay when a
lane's per-request cost is high; a slow lane is used while its time lasts; questions that are
slow on every lane must earn their time. The plan is re-made after every outcome.

The expected gain of n samples is the question's marginal gain for one sample (`marginal_gain`:
P(leader unsettled) x P(a sample joins the leader) = u x s) extended as u x (1 - (1 - s)^n),
concave in n, times the allocator's greedy doubt. Seconds per sample are estimated from what
was observed: this question on this lane, else this lane on any question, else 0 (an untried
lane is tried).

This module plans only; `budgetflow.evaluate.allocated_lanes` runs the plan live and
`budgetflow.evaluate.simulate_lanes` replays it against recorded banks.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from budgetflow.allocate.base import Allocator, leader_odds
from budgetflow.answers.voting import Evidence

__all__ = [
    "DrawPlan",
    "LaneView",
    "expected_gain",
    "plan_next_draw",
]


@dataclass(slots=True, kw_only=True)
class LaneView:
    """What the planner knows of a lane: time left, per-request cost, observed seconds per sample."""

    seconds_left: float
    request_seconds: float = 0.0
    observed_seconds: dict[int, list[float]] = field(default_factory=dict)  # question -> per sample
    available: dict[int, int] = field(default_factory=dict)  # question -> samples it can still give
    greedy_seconds: list[float] = field(default_factory=list)  # observed greedy answers (unbatched)
    has_greedy: set[int] = field(default_factory=set)  # questions whose greedy answer it can give
    _seconds_total: float = 0.0
    _seconds_count: int = 0

    def observe(self, question: int, seconds_per_sample: list[float]) -> None:
        """Record what the samples of one request to this lane took, each."""
        self.observed_seconds.setdefault(question, []).extend(seconds_per_sample)
        self._seconds_total += sum(seconds_per_sample)
        self._seconds_count += len(seconds_per_sample)

    def spend(self, seconds: float) -> bool:
        """Charge a request's time; one that would overrun is cancelled at the deadline: its time
        is spent, nothing comes back (False) and the lane is done."""
        if seconds > self.seconds_left + 1e-9:
            self.seconds_left = 0.0
            return False
        self.seconds_left -= seconds
        return True

    def seconds_for_greedy(self, question: int) -> float:
        if self.greedy_seconds:
            return statistics.fmean(self.greedy_seconds)
        return self.seconds_per_sample(question)

    def seconds_per_sample(self, question: int) -> float:
        """This question's mean on this lane, else the lane's mean, else 0 (untried lanes get tried)."""
        own = self.observed_seconds.get(question)
        if own:
            return statistics.fmean(own)
        return self._seconds_total / self._seconds_count if self._seconds_count else 0.0


@dataclass(frozen=True, slots=True)
class DrawPlan:
    question: int
    lane: int
    n: int
    greedy: bool = False


def expected_gain(evidence: Evidence, allocator: Allocator, n: int) -> float:
    """Estimated accuracy gained by n more samples of this question (see the module doc). With
    verifier-weighted votes: the verifier's doubt about the leader x (1 - (1 - s)^n), s = 1 / (2 +
    samples drawn), the allocators' per-sample priority extended to n samples the same way."""
    verified = allocator.verifier_doubt(evidence)
    if verified is not None:
        step = 1.0 / (2 + len(evidence.answers))
        return verified * (1.0 - (1.0 - step) ** n) * allocator.doubt(evidence)
    unsettled, joins = leader_odds(evidence, allocator.voting)
    return unsettled * (1.0 - (1.0 - joins) ** n) * allocator.doubt(evidence)


def plan_next_draw(
    evidence: list[Evidence],
    lanes: list[LaneView],
    *,
    allocator: Allocator,
    samples_left: int,
    max_batch: int = 8,
) -> DrawPlan | None:
    """The draw (question, lane, n, greedy or not) with the best gain per share of budget and
    time, or None. With `allocator.use_greedy`, a question's greedy answer is one of the options
    (once, on a lane that has it), worth a vote of `greedy_weight` samples."""
    best: tuple[float, DrawPlan] | None = None
    for question, seen in enumerate(evidence):
        if allocator.cap is not None and len(seen.answers) >= allocator.cap:
            continue
        for index, lane in enumerate(lanes):
            for plan, seconds in _options(question, seen, index, lane, allocator, samples_left, max_batch):
                share = plan.n / samples_left + seconds / max(lane.seconds_left, 1e-9)
                gain = expected_gain(seen, allocator, plan.n)
                score = gain * (allocator.voting.greedy_weight if plan.greedy else 1.0) / share
                if score > 0 and (best is None or score > best[0] + 1e-12):
                    best = (score, plan)
    return None if best is None else best[1]


def _options(
    question: int,
    seen: Evidence,
    index: int,
    lane: LaneView,
    allocator: Allocator,
    samples_left: int,
    max_batch: int,
) -> list[tuple[DrawPlan, float]]:
    """The draws that fit the lane's time and the samples left, with their estimated seconds."""
    options = []
    if allocator.use_greedy and not seen.used_greedy and question in lane.has_greedy and samples_left:
        options.append((DrawPlan(question, index, 1, greedy=True), lane.seconds_for_greedy(question)))
    largest = min(max_batch, samples_left, lane.available.get(question, max_batch))
    per_sample = lane.seconds_per_sample(question)
    options += [(DrawPlan(question, index, n), n * per_sample) for n in range(1, largest + 1)]
    return [
        (plan, lane.request_seconds + seconds)
        for plan, seconds in options
        if lane.request_seconds + seconds <= lane.seconds_left
    ]
