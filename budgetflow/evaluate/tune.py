"""Choose the whole allocation policy on a calibration bank, and say how it does on held-out data.

Candidates (`candidate_policies`): every allocator (uniform, online, difficulty, early_stop with
two stop rules) without the greedy answer as evidence or with it weighing one or four samples,
with plain votes and, where the bank has what they need, confidence-weighted (mean token
log-probabilities) or verifier-weighted (verifier scores), and, when the bank comes at several
temperatures, each temperature.
"Uniform with greedy evidence, plain votes" (`BASELINE`) is among them.

Every candidate is replayed on the bank at each budget (`replay_questions`; several pooled
banks each on their own, with their own budget) and the best mean accuracy over all budgets
wins (one policy for every budget; `across_budgets=False` chooses per budget), but only among
candidates that no source bank finds worse than `BASELINE` by more than one standard error, and
only if it beats `BASELINE` by more than one standard error of the paired, per-question
difference; otherwise `BASELINE` is kept. So a chosen policy is never worse than the baseline on
its calibration data, a noisy win does not displace it, and a policy that wins on the pool by
losing badly on one kind of data (a verifier that misleads on one family) is not chosen.

Choosing and scoring on the same questions flatters the winner, so `tune` also reports the
procedure cross-fitted: questions fall in `folds` folds (by a hash of their id); the policy is
chosen on all folds but one and scored on that one, each fold in turn. Those held-out figures
are the ones to quote; the in-sample ones say how well the winner fits.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from budgetflow.allocate.policy import Policy, PolicyTable
from budgetflow.errors import ConfigError
from budgetflow.evaluate.bank import BankQuestion
from budgetflow.evaluate.simulate import replay_questions

__all__ = [
    "BASELINE",
    "BudgetReport",
    "TuneResult",
    "candidate_policies",
    "choose",
    "choose_policies",
    "tune",
]

#: What a tuned policy must beat, by more than noise, to be chosen.
BASELINE = Policy(allocator="uniform", use_greedy=True)
CONFIDENCE_WEIGHTS = (10.0, 20.0)
VERIFIER_WEIGHTS = (1.0, 3.0)
#: How many samples the greedy answer's vote may weigh (4: where greedy decoding beats noisy
#: samples, as on letter counting and T=1.0 multiplication, a few samples no longer outvote it).
GREEDY_WEIGHTS = (1.0, 4.0)
EARLY_STOP_RULES = ((0.85, 4), (0.95, 6))
ALLOCATORS = ("uniform", "online", "difficulty", "early_stop")

#: One bank per temperature over the same questions (a single bank: one entry).
Variants = dict[float | None, list[BankQuestion]]


@dataclass(frozen=True, slots=True, kw_only=True)
class BudgetReport:
    """One budget's outcome: the policy chosen on all the data, its in-sample accuracy and the
    baseline's, and the procedure's held-out (cross-fitted) accuracy and the baselines' there."""

    budget: int
    chosen: Policy
    in_sample: float
    baseline_in_sample: float
    held_out: float
    baseline_held_out: float
    uniform_held_out: float
    held_out_choices: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class TuneResult:
    budgets: tuple[BudgetReport, ...]
    questions: int
    candidates: int

    def table(self, source: str) -> PolicyTable:
        calibration = {
            "source": source,
            "questions": self.questions,
            "candidates": self.candidates,
            "budgets": {
                str(r.budget): {
                    "in_sample": r.in_sample,
                    "baseline_in_sample": r.baseline_in_sample,
                    "held_out": r.held_out,
                    "baseline_held_out": r.baseline_held_out,
                    "uniform_held_out": r.uniform_held_out,
                }
                for r in self.budgets
            },
        }
        return PolicyTable(plans={r.budget: r.chosen for r in self.budgets}, calibration=calibration)


def candidate_policies(
    bank: Sequence[BankQuestion], temperatures: Sequence[float | None] = (None,)
) -> list[Policy]:
    """Every policy `tune` considers on `bank` (votes limited to what its samples carry)."""
    policies = [
        Policy(
            allocator=allocator,
            use_greedy=greedy_weight is not None,
            greedy_weight=greedy_weight or 1.0,
            confidence_weight=confidence,
            verifier_weight=verifier,
            stop_confidence=stop,
            hopeless_after=hopeless,
        )
        for allocator in ALLOCATORS
        for greedy_weight in (*GREEDY_WEIGHTS, None)
        for confidence, verifier in _votes(bank)
        for stop, hopeless in (EARLY_STOP_RULES if allocator == "early_stop" else ((None, 4),))
    ]
    return [replace(p, temperature=t) for t in temperatures for p in policies]


def _votes(bank: Sequence[BankQuestion]) -> list[tuple[float | None, float | None]]:
    """(confidence weight, verifier weight) pairs the bank's samples can be counted with: plain
    votes, confidence- or verifier-weighted. Not both together: on benchmarks/policies.py that
    pair won in-sample on three of five banks, but chosen from the other banks it lost 13-15
    points of the gap on letter counting and products, where the verifier misleads."""
    samples = [s for q in bank for s in q.samples if s.answer is not None]
    votes: list[tuple[float | None, float | None]] = [(None, None)]
    if all(s.mean_logprob is not None for s in samples):
        votes += [(weight, None) for weight in CONFIDENCE_WEIGHTS]
    if all(s.verifier_score is not None for s in samples):
        votes += [(None, weight) for weight in VERIFIER_WEIGHTS]
    return votes


def tune(
    variants: Variants,
    budgets: Sequence[int],
    *,
    groups: Sequence[int] | None = None,
    seeds: int = 8,
    folds: int = 2,
    across_budgets: bool = True,
) -> TuneResult:
    """A policy for the questions of `variants` at each budget (samples per question), with its
    cross-fitted record; see the module docstring. `groups` says which source (bank) each
    question came from, when several were pooled. With `across_budgets` (the default) one policy
    serves every budget: the one best over all of them, each question at each budget a paired
    observation. Per-budget choices fit noise more (benchmarks/policies.py: on five held-out
    banks the single policy was as good or better in all 15 cells, by up to 10 points)."""
    setup = _setup(variants, groups, folds)
    everything = {b: _scores(variants, setup, b, None, seeds) for b in budgets}
    chosen = _choices(everything, setup.groups, across_budgets)
    held_out, baseline, uniform, picks = _cross_fitted(variants, setup, budgets, folds, seeds, across_budgets)
    reports = tuple(
        BudgetReport(
            budget=b,
            chosen=chosen[b],
            in_sample=float(np.mean(everything[b][chosen[b]])),
            baseline_in_sample=float(np.mean(everything[b][_baseline_of(setup.candidates)])),
            held_out=held_out[b],
            baseline_held_out=baseline[b],
            uniform_held_out=uniform[b],
            held_out_choices=picks[b],
        )
        for b in budgets
    )
    return TuneResult(budgets=reports, questions=len(setup.groups), candidates=len(setup.candidates))


def choose_policies(
    variants: Variants,
    budgets: Sequence[int],
    *,
    groups: Sequence[int] | None = None,
    seeds: int = 8,
    across_budgets: bool = True,
) -> dict[int, Policy]:
    """`tune`'s choice for each budget, without the cross-fitted record (a third of the work)."""
    setup = _setup(variants, groups, 1)
    scores = {b: _scores(variants, setup, b, None, seeds) for b in budgets}
    return _choices(scores, setup.groups, across_budgets)


def _choices(
    scores: dict[int, dict[Policy, np.ndarray]], groups: Sequence[int], across_budgets: bool
) -> dict[int, Policy]:
    """A policy per budget from per-budget, per-question scores (one for all `across_budgets`)."""
    if not across_budgets:
        return {b: choose(by_policy, groups) for b, by_policy in scores.items()}
    candidates = list(next(iter(scores.values())))
    combined = {p: np.concatenate([by_policy[p] for by_policy in scores.values()]) for p in candidates}
    pick = choose(combined, [g for _ in scores for g in groups])
    return dict.fromkeys(scores, pick)


@dataclass(frozen=True, slots=True)
class _Setup:
    candidates: list[Policy]
    folds: list[int]  # each question's fold
    groups: list[int]  # each question's source bank


def _setup(variants: Variants, groups: Sequence[int] | None, folds: int) -> _Setup:
    if not variants:
        raise ConfigError("tune needs at least one bank")
    reference = next(iter(variants.values()))
    candidates = candidate_policies(reference, list(variants))
    if len(variants) == 1:  # a single bank: its temperature is not a choice
        candidates = [replace(p, temperature=None) for p in candidates]
    if groups is not None and len(groups) != len(reference):
        raise ConfigError(f"{len(groups)} group labels for {len(reference)} questions")
    assignment = [zlib.crc32(q.id.encode()) % folds for q in reference]
    return _Setup(candidates, assignment, list(groups) if groups is not None else [0] * len(reference))


def choose(scores: dict[Policy, np.ndarray], groups: Sequence[int] | None = None) -> Policy:
    """The best mean accuracy among the candidates no source bank finds worse than the baseline
    by more than one standard error, kept only if its paired lead over the baseline is more than
    one standard error; else the baseline. Per-question `scores`; `groups` as in `tune`."""
    baseline = _baseline_of(list(scores))
    labels = np.asarray(groups if groups is not None else [0] * len(scores[baseline]))

    def safe(policy: Policy) -> bool:
        difference = scores[policy] - scores[baseline]
        return all(_lead(difference[labels == g]) > -_spread(difference[labels == g]) for g in set(labels))

    eligible = [policy for policy in scores if policy == baseline or safe(policy)]
    best = max(eligible, key=lambda policy: (float(np.mean(scores[policy])), policy == baseline))
    difference = scores[best] - scores[baseline]
    return best if _lead(difference) > _spread(difference) else baseline


def _lead(difference: np.ndarray) -> float:
    return float(np.mean(difference)) if len(difference) else 0.0


def _spread(difference: np.ndarray) -> float:
    """The standard error of a mean paired difference."""
    return float(np.std(difference, ddof=1)) / math.sqrt(len(difference)) if len(difference) > 1 else 0.0


def _baseline_of(candidates: Sequence[Policy]) -> Policy:
    """BASELINE at the first temperature offered (the bank's own when there is one)."""
    return next(p for p in candidates if replace(p, temperature=None) == BASELINE)


def _scores(
    variants: Variants, setup: _Setup, budget: int, fold: int | None, seeds: int
) -> dict[Policy, np.ndarray]:
    """Per-question accuracy of each candidate on the questions of `fold` (None: all), in order.
    Each source bank is replayed on its own, with its own budget: a user runs one dataset, and a
    pooled replay would let the allocator move budget between unrelated banks."""
    chosen = [i for i, f in enumerate(setup.folds) if fold is None or f == fold]
    parts = [[i for i in chosen if setup.groups[i] == g] for g in sorted(set(setup.groups))]
    scores = {}
    for policy in setup.candidates:
        bank = variants.get(policy.temperature) or next(iter(variants.values()))
        correct = np.zeros(len(bank))
        for part in filter(None, parts):
            questions = [bank[i] for i in part]
            cap = min(len(q.samples) for q in questions)
            replay = replay_questions(
                questions, policy.build(cap=cap), budget_samples=budget * len(questions), seeds=seeds
            )
            correct[part] = replay.correct
        scores[policy] = correct[chosen]
    return scores


def _cross_fitted(
    variants: Variants, setup: _Setup, budgets: Sequence[int], folds: int, seeds: int, across_budgets: bool
) -> tuple[dict[int, float], dict[int, float], dict[int, float], dict[int, tuple[str, ...]]]:
    """Held-out accuracy, per budget, of the chosen policy, of BASELINE and of plain uniform.

    Choosing on "all folds but f" would replay every candidate once more per fold; instead each
    fold's candidates are replayed on that fold alone, and the choice for fold f is made on the
    per-question scores of the other folds (each question scored in its own fold's run)."""
    per_fold = [{b: _scores(variants, setup, b, fold, seeds) for b in budgets} for fold in range(folds)]
    fold_groups = [
        [g for g, f in zip(setup.groups, setup.folds, strict=True) if f == fold] for fold in range(folds)
    ]
    baseline = _baseline_of(setup.candidates)
    uniform = replace(baseline, use_greedy=False)
    held: dict[int, list[np.ndarray]] = {b: [] for b in budgets}
    base: dict[int, list[np.ndarray]] = {b: [] for b in budgets}
    plain: dict[int, list[np.ndarray]] = {b: [] for b in budgets}
    picks: dict[int, list[str]] = {b: [] for b in budgets}
    for fold in range(folds):
        others = [f for f in range(folds) if f != fold]
        training = {
            b: {p: np.concatenate([per_fold[f][b][p] for f in others]) for p in setup.candidates}
            for b in budgets
        }
        chosen = _choices(training, [g for f in others for g in fold_groups[f]], across_budgets)
        for b in budgets:
            picks[b].append(chosen[b].label)
            held[b].append(per_fold[fold][b][chosen[b]])
            base[b].append(per_fold[fold][b][baseline])
            plain[b].append(per_fold[fold][b][uniform])
    return (
        {b: _pooled(held[b]) for b in budgets},
        {b: _pooled(base[b]) for b in budgets},
        {b: _pooled(plain[b]) for b in budgets},
        {b: tuple(picks[b]) for b in budgets},
    )


def _pooled(parts: list[np.ndarray]) -> float:
    return float(np.mean(np.concatenate(parts)))
