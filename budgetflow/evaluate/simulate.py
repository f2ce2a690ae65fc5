"""Replay allocators against a sample bank: accuracy and tokens at a budget, over many seeds.

Each seed shuffles every question's recorded samples once; an allocator's n-th sample of a
question is the n-th of that shuffle (sampling without replacement). A budget in samples is the
total over all questions; a greedy answer, when a policy uses it, costs one sample and its tokens.
A budget in tokens counts completion tokens. Allocation never exceeds the budget, and every
question gets an answer from what it drew (None if it drew nothing).

`oracle_curve` is the upper bound: knowing each question's full answer distribution, the
expected majority-vote accuracy of n samples per question, with or without the greedy vote, and
the best split of the budget across questions (exact, by dynamic programming).
"""

from __future__ import annotations

import random
import statistics
import zlib
from dataclasses import dataclass

import numpy as np

from budgetflow.allocate.base import Allocator
from budgetflow.answers.equivalence import normalize_answer
from budgetflow.answers.voting import Evidence, Voting, answer_key, final_answer
from budgetflow.errors import ConfigError
from budgetflow.evaluate.bank import BankQuestion

__all__ = [
    "Replay",
    "SimulationResult",
    "correct_keys",
    "majority_curve",
    "oracle_accuracy",
    "replay_questions",
    "simulate",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class SimulationResult:
    allocator: str
    accuracy: float
    tokens: float
    samples_per_question: float
    seeds: int


def correct_keys(*records: BankQuestion) -> set[str]:
    """The normalised answers graded correct among the samples and greedy answers of one question's
    records (several when the question was recorded on several backends)."""
    drawn = [s for q in records for s in (*q.samples, *([q.greedy] if q.greedy else []))]
    return {normalize_answer(s.answer) for s in drawn if s.correct and s.answer is not None}


def simulate(
    bank: list[BankQuestion],
    allocator: Allocator,
    *,
    budget_samples: int | None = None,
    budget_tokens: int | None = None,
    budget_seconds: float | None = None,
    seeds: int = 20,
) -> SimulationResult:
    """Mean accuracy and completion tokens of `allocator` on `bank` over `seeds` shuffles.

    `budget_seconds` adds a wall-clock limit (samples cost their recorded seconds, run one after
    another) on top of the sample or token budget."""
    replay = replay_questions(
        bank,
        allocator,
        budget_samples=budget_samples,
        budget_tokens=budget_tokens,
        budget_seconds=budget_seconds,
        seeds=seeds,
    )
    return SimulationResult(
        allocator=allocator.name,
        accuracy=float(np.mean(replay.correct)),
        tokens=statistics.fmean(replay.tokens),
        samples_per_question=statistics.fmean(replay.drawn),
        seeds=seeds,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Replay:
    """Per-question outcomes of replaying an allocator: `correct[i]` is the share of seeds on
    which question i was answered right; `tokens` and `drawn` are per seed (all questions)."""

    correct: np.ndarray
    tokens: list[int]
    drawn: list[float]


def replay_questions(
    bank: list[BankQuestion],
    allocator: Allocator,
    *,
    budget_samples: int | None = None,
    budget_tokens: int | None = None,
    budget_seconds: float | None = None,
    seeds: int = 20,
) -> Replay:
    """`simulate`, question by question (what paired comparisons between policies need)."""
    if (budget_samples is None) == (budget_tokens is None):
        raise ConfigError("give exactly one of budget_samples and budget_tokens")
    correct = [correct_keys(q) for q in bank]
    hits = np.zeros(len(bank))
    tokens, drawn = [], []
    for seed in range(seeds):
        evidence = _run_once(
            bank, allocator, (budget_samples, budget_tokens, budget_seconds), random.Random(seed)
        )
        answers = [final_answer(e, allocator.voting) for e in evidence]
        hits += [a is not None and a in ok for a, ok in zip(answers, correct, strict=True)]
        tokens.append(sum(e.tokens for e in evidence))
        drawn.append(sum(len(e.answers) + e.used_greedy for e in evidence) / len(bank))
    return Replay(correct=hits / seeds, tokens=tokens, drawn=drawn)


_Limits = tuple[int | None, int | None, float | None]  # samples, tokens, seconds


class _Spender:
    """Draws samples for questions while the budget (samples or tokens) allows."""

    def __init__(self, bank: list[BankQuestion], limits: _Limits, rng: random.Random) -> None:
        self.bank = bank
        self.left_samples, self.left_tokens, self.left_seconds = limits
        self.orders = [rng.sample(range(len(q.samples)), len(q.samples)) for q in bank]
        self.evidence = [Evidence() for _ in bank]

    def can_draw(self, index: int) -> bool:
        drawn = len(self.evidence[index].answers)
        if drawn >= len(self.bank[index].samples):
            return False
        sample = self.bank[index].samples[self.orders[index][drawn]]
        return self._affordable(sample.completion_tokens, sample.seconds)

    def _affordable(self, cost: int, seconds: float) -> bool:
        if self.left_seconds is not None and self.left_seconds < seconds:
            return False
        if self.left_samples is not None:
            return self.left_samples >= 1
        assert self.left_tokens is not None
        return self.left_tokens >= cost

    def _pay(self, cost: int, seconds: float) -> None:
        if self.left_seconds is not None:
            self.left_seconds -= seconds
        if self.left_samples is not None:
            self.left_samples -= 1
        else:
            assert self.left_tokens is not None
            self.left_tokens -= cost

    def draw(self, index: int, quota: int | None = None) -> None:
        """Draw the question's next sample; with a `quota`, a longer sample is cut there: it costs
        the quota and states no answer."""
        evidence = self.evidence[index]
        sample = self.bank[index].samples[self.orders[index][len(evidence.answers)]]
        cut = quota is not None and sample.completion_tokens > quota
        cost = quota if cut and quota is not None else sample.completion_tokens
        self._pay(cost, sample.seconds)
        evidence.seconds += sample.seconds
        if cut:
            evidence.add(None)
        else:
            evidence.add(answer_key(sample.answer), sample.mean_logprob, sample.verifier_score)
        evidence.tokens += cost
        evidence.longest = max(evidence.longest, cost)

    def take_greedy(self, index: int) -> None:
        greedy = self.bank[index].greedy
        if greedy is None or not self._affordable(greedy.completion_tokens, greedy.seconds):
            return
        self._pay(greedy.completion_tokens, greedy.seconds)
        evidence = self.evidence[index]
        evidence.set_greedy(answer_key(greedy.answer), greedy.mean_logprob, greedy.verifier_score)
        evidence.tokens += greedy.completion_tokens


def _run_once(
    bank: list[BankQuestion],
    allocator: Allocator,
    limits: _Limits,
    rng: random.Random,
) -> list[Evidence]:
    spender = _Spender(bank, limits, rng)
    questions = range(len(bank))
    if allocator.use_greedy:
        for index in questions:
            spender.take_greedy(index)
    if not allocator.adaptive:
        _spread_evenly(spender, rng)
        return spender.evidence
    for _ in range(allocator.probe):
        for index in questions:
            if spender.can_draw(index):
                spender.draw(index)
    priorities = np.array([allocator.priority(e) for e in spender.evidence])
    while True:
        for index in np.argsort(-priorities, kind="stable"):
            if priorities[index] <= 0:
                return spender.evidence
            if spender.can_draw(int(index)):
                spender.draw(int(index), allocator.quota(spender.evidence[int(index)]))
                priorities[index] = allocator.priority(spender.evidence[index])
                break
        else:
            return spender.evidence


def _spread_evenly(spender: _Spender, rng: random.Random) -> None:
    """Round-robin in a random question order: the same count everywhere, the remainder spread."""
    order = list(range(len(spender.bank)))
    rng.shuffle(order)
    progressed = True
    while progressed:
        progressed = False
        for index in order:
            if spender.can_draw(index):
                spender.draw(index)
                progressed = True


def majority_curve(
    question: BankQuestion, max_n: int, with_greedy: bool, trials: int, voting: Voting | None = None
) -> list[float]:
    """Expected correctness of the vote of n samples (plus the greedy vote), n = 0..max_n."""
    voting = voting or Voting()
    rng = random.Random(zlib.crc32(question.id.encode()))
    ok = correct_keys(question)
    greedy = question.greedy if with_greedy else None
    curve = [0.0] * (max_n + 1)
    for _ in range(trials):
        order = rng.sample(range(len(question.samples)), len(question.samples))
        evidence = Evidence()
        if greedy is not None:
            evidence.set_greedy(answer_key(greedy.answer), greedy.mean_logprob, greedy.verifier_score)
        curve[0] += final_answer(evidence, voting) in ok
        for n in range(1, max_n + 1):
            sample = question.samples[order[n - 1]]
            evidence.add(answer_key(sample.answer), sample.mean_logprob, sample.verifier_score)
            curve[n] += final_answer(evidence, voting) in ok
    return [value / trials for value in curve]


def oracle_accuracy(
    bank: list[BankQuestion],
    budget_samples: int,
    *,
    trials: int = 64,
    votings: tuple[Voting, ...] = (Voting(),),
) -> float:
    """The best expected accuracy any split of `budget_samples` across questions can reach, each
    question counted by whichever of `votings` serves it best (plain majority by default)."""
    best = np.full(budget_samples + 1, -np.inf)
    best[0] = 0.0
    for question in bank:
        max_n = min(len(question.samples), budget_samples)
        options = [(n, value) for n, value in enumerate(_best_curve(question, max_n, False, trials, votings))]
        if question.greedy is not None and budget_samples >= 1:
            with_greedy = _best_curve(question, min(max_n, budget_samples - 1), True, trials, votings)
            options += [(n + 1, value) for n, value in enumerate(with_greedy)]
        step = np.full(budget_samples + 1, -np.inf)
        for cost, value in options:
            shifted = np.full(budget_samples + 1, -np.inf)
            shifted[cost:] = best[: budget_samples + 1 - cost] + value
            step = np.maximum(step, shifted)
        best = step
    return float(best.max() / len(bank))


def _best_curve(
    question: BankQuestion, max_n: int, with_greedy: bool, trials: int, votings: tuple[Voting, ...]
) -> list[float]:
    curves = [majority_curve(question, max_n, with_greedy, trials, voting) for voting in votings]
    return [max(values) for values in zip(*curves, strict=True)]
