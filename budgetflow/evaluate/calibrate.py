"""Calibrate `compute_optimal` (Snell et al.): learn on a calibration split how many samples each
difficulty bin (`budgetflow.allocate.policies.probe_bin`) deserves at each budget; the allocator
applies the table to new questions.

Difficulty is estimated from a cheap probe: the greedy answer and two samples. All three agree ->
bin 0 (easy), two agree -> bin 1, all differ -> bin 2 (hard). On the calibration split, each bin's
expected vote accuracy curve (greedy vote included; majority, or the confidence- or
verifier-weighted `Voting` the table is calibrated for) is averaged over its questions, and a
small knapsack over bins picks the samples per bin that maximise accuracy within the budget
(probe included). `budgetflow bank calibrate` writes the table, with its voting; the allocator
reads both.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from budgetflow.allocate.policies import BINS, PROBE_SAMPLES, probe_bin
from budgetflow.answers.voting import Evidence, Voting, answer_key
from budgetflow.errors import ConfigError, DatasetError
from budgetflow.evaluate.bank import BankQuestion, optional_number
from budgetflow.evaluate.simulate import majority_curve

__all__ = ["CalibrationTable", "calibrate"]


@dataclass(frozen=True, slots=True)
class CalibrationTable:
    """samples per question for each bin, for each budget (average samples per question), and the
    vote the plans were calibrated for."""

    plans: dict[int, tuple[int, ...]]
    voting: Voting = field(default_factory=Voting)

    def targets_for(self, budget_per_question: float) -> tuple[int, ...]:
        usable = [b for b in self.plans if b <= budget_per_question]
        if not usable:
            raise ConfigError(f"the calibration table has no plan for a budget of {budget_per_question}")
        return self.plans[max(usable)]

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        voting = {
            "greedy_weight": self.voting.greedy_weight,
            "confidence_weight": self.voting.confidence_weight,
            "verifier_weight": self.voting.verifier_weight,
        }
        plans = {str(b): list(t) for b, t in self.plans.items()}
        path.write_text(json.dumps({"bins": BINS, "plans": plans, "voting": voting}, indent=2))

    @classmethod
    def load(cls, path: Path) -> CalibrationTable:
        """A table from `save`; tables written before votes were weighted read as majority vote."""
        try:
            data = json.loads(path.read_text())
            plans = {int(b): tuple(int(n) for n in t) for b, t in data["plans"].items()}
            voting = data.get("voting") or {}
            return cls(
                plans,
                Voting(
                    greedy_weight=float(voting.get("greedy_weight", 1.0)),
                    confidence_weight=optional_number(voting.get("confidence_weight"), "confidence_weight"),
                    verifier_weight=optional_number(voting.get("verifier_weight"), "verifier_weight"),
                ),
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError, DatasetError) as exc:
            raise ConfigError(f"{path}: not a calibration table ({exc})") from None


def _calibration_bin(question: BankQuestion, rng: random.Random) -> int:
    order = rng.sample(range(len(question.samples)), len(question.samples))
    greedy = answer_key(question.greedy.answer) if question.greedy else None
    answers = [answer_key(question.samples[i].answer) for i in order[:PROBE_SAMPLES]]
    return probe_bin(Evidence(answers=answers, greedy=greedy, used_greedy=True))


def calibrate(
    bank: list[BankQuestion], budgets: list[int], *, seed: int = 0, voting: Voting | None = None
) -> CalibrationTable:
    """Per-bin sample counts that maximise calibration accuracy at each average budget, votes
    counted by `voting` (plain majority by default)."""
    voting = voting or Voting()
    rng = random.Random(seed)
    max_n = min(len(q.samples) for q in bank)
    curves: list[list[np.ndarray]] = [[] for _ in range(BINS)]
    for question in bank:
        curve = np.array(majority_curve(question, max_n, with_greedy=True, trials=64, voting=voting))
        curves[_calibration_bin(question, rng)].append(curve)
    counts = [len(c) for c in curves]
    means = [np.mean(c, axis=0) if c else np.zeros(max_n + 1) for c in curves]
    plans = {budget: _best_split(means, counts, budget, max_n) for budget in budgets}
    return CalibrationTable(plans, voting)


def _best_split(means: list[np.ndarray], counts: list[int], budget: int, max_n: int) -> tuple[int, ...]:
    """Samples per bin (at least the probe) maximising sum(count x accuracy) subject to
    sum(count x (n + 1 greedy)) <= budget x questions."""
    total = sum(counts)
    best: tuple[float, tuple[int, ...]] = (-1.0, tuple([PROBE_SAMPLES] * BINS))
    options = range(PROBE_SAMPLES, max_n + 1)
    for first in options:
        for second in options:
            for third in options:
                plan = (first, second, third)
                cost = sum(c * (n + 1) for c, n in zip(counts, plan, strict=True))
                if cost > budget * total:
                    continue
                value = sum(c * float(m[n]) for c, m, n in zip(counts, means, plan, strict=True))
                if value > best[0] + 1e-12:
                    best = (value, plan)
    return best[1]
