"""Replay the deadline planner (`budgetflow.allocate.deadline`) against one bank per lane (the
same questions, recorded on each backend).

A draw whose recorded time would overrun its lane's deadline is cancelled at the deadline, as
the live runtime does: its time is spent, its samples are lost, the lane is done.
"""

from __future__ import annotations

import random
import statistics
from dataclasses import dataclass

from budgetflow.allocate.base import Allocator
from budgetflow.allocate.deadline import DrawPlan, LaneView, plan_next_draw
from budgetflow.answers.voting import Evidence, answer_key, final_answer
from budgetflow.errors import ConfigError
from budgetflow.evaluate.bank import BankQuestion
from budgetflow.evaluate.simulate import correct_keys

__all__ = ["Lane", "LaneSimulation", "simulate_lanes"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Lane:
    """One backend, as recorded in a bank; each request costs `request_seconds` on top of its samples."""

    name: str
    bank: list[BankQuestion]
    request_seconds: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class LaneSimulation:
    accuracy: float
    tokens: float
    samples_per_question: float
    seconds: float
    samples_by_lane: dict[str, float]
    seeds: int


def simulate_lanes(
    lanes: list[Lane],
    allocator: Allocator,
    *,
    budget_samples: int,
    budget_seconds: float,
    seeds: int = 20,
    max_batch: int = 8,
) -> LaneSimulation:
    """Mean accuracy, tokens, wall time and samples per lane of the deadline planner over `seeds`."""
    questions = _check_lanes(lanes)
    correct = [correct_keys(*(lane.bank[i] for lane in lanes)) for i in range(questions)]
    runs = [
        _LaneRun(lanes, allocator, budget_samples, budget_seconds, random.Random(seed)).run(max_batch)
        for seed in range(seeds)
    ]
    accuracy = [
        sum(final_answer(e, allocator.voting) in ok for e, ok in zip(run.evidence, correct, strict=True))
        / questions
        for run in runs
    ]
    return LaneSimulation(
        accuracy=statistics.fmean(accuracy),
        tokens=statistics.fmean(sum(e.tokens for e in run.evidence) for run in runs),
        samples_per_question=statistics.fmean(
            sum(len(e.answers) + e.used_greedy for e in run.evidence) / questions for run in runs
        ),
        seconds=statistics.fmean(run.wall_seconds() for run in runs),
        samples_by_lane={
            lane.name: statistics.fmean(run.drawn[i] for run in runs) for i, lane in enumerate(lanes)
        },
        seeds=seeds,
    )


def _check_lanes(lanes: list[Lane]) -> int:
    if not lanes:
        raise ConfigError("simulate_lanes needs at least one lane (bank)")
    ids = [q.id for q in lanes[0].bank]
    for lane in lanes[1:]:
        if [q.id for q in lane.bank] != ids:
            raise ConfigError(
                f"lane {lane.name!r} does not hold the same questions in the same order as {lanes[0].name!r}"
            )
    return len(ids)


class _LaneRun:
    """One seeded replay: shuffled pools per (lane, question), evidence pooled across lanes."""

    def __init__(
        self, lanes: list[Lane], allocator: Allocator, samples: int, seconds: float, rng: random.Random
    ) -> None:
        self.lanes, self.allocator, self.samples_left, self.deadline = lanes, allocator, samples, seconds
        size = len(lanes[0].bank)
        self.orders = [[rng.sample(range(len(q.samples)), len(q.samples)) for q in ln.bank] for ln in lanes]
        self.evidence = [Evidence() for _ in range(size)]
        self.views = [
            LaneView(
                seconds_left=seconds,
                request_seconds=lane.request_seconds,
                available={i: len(q.samples) for i, q in enumerate(lane.bank)},
                has_greedy={i for i, q in enumerate(lane.bank) if q.greedy is not None},
            )
            for lane in lanes
        ]
        self.drawn = [0] * len(lanes)

    def run(self, max_batch: int) -> _LaneRun:
        while self.samples_left > 0:
            plan = plan_next_draw(
                self.evidence,
                self.views,
                allocator=self.allocator,
                samples_left=self.samples_left,
                max_batch=max_batch,
            )
            if plan is None:
                break
            self._draw(plan)
        return self

    def wall_seconds(self) -> float:
        return max(self.deadline - view.seconds_left for view in self.views)

    def _take_greedy(self, plan: DrawPlan) -> None:
        view, greedy = self.views[plan.lane], self.lanes[plan.lane].bank[plan.question].greedy
        assert greedy is not None
        view.has_greedy.discard(plan.question)
        self.samples_left -= 1
        if not view.spend(view.request_seconds + greedy.seconds):
            return
        view.greedy_seconds.append(greedy.seconds)
        evidence = self.evidence[plan.question]
        evidence.set_greedy(answer_key(greedy.answer), greedy.mean_logprob, greedy.verifier_score)
        evidence.tokens += greedy.completion_tokens
        self.drawn[plan.lane] += 1

    def _draw(self, plan: DrawPlan) -> None:
        if plan.greedy:
            self._take_greedy(plan)
            return
        view, record = self.views[plan.lane], self.lanes[plan.lane].bank[plan.question]
        start = len(record.samples) - view.available[plan.question]
        picked = [record.samples[i] for i in self.orders[plan.lane][plan.question][start : start + plan.n]]
        seconds = view.request_seconds + sum(s.seconds for s in picked)
        self.samples_left -= plan.n
        view.available[plan.question] -= plan.n
        if not view.spend(seconds):
            return
        view.observe(plan.question, [s.seconds for s in picked])
        evidence = self.evidence[plan.question]
        for sample in picked:
            evidence.add(answer_key(sample.answer), sample.mean_logprob, sample.verifier_score)
            evidence.tokens += sample.completion_tokens
        evidence.seconds += seconds
        self.drawn[plan.lane] += plan.n
