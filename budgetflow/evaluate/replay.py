"""Replay one allocator against recorded banks (`budgetflow bank simulate`), beside the uniform
floor and the oracle upper bound, as one frozen config in and one summary out."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

from budgetflow.allocate import Allocator, make_allocator
from budgetflow.answers.voting import Voting
from budgetflow.errors import ConfigError
from budgetflow.evaluate.bank import BankQuestion, load_bank
from budgetflow.evaluate.calibrate import CalibrationTable
from budgetflow.evaluate.simulate import SimulationResult, oracle_accuracy, simulate
from budgetflow.evaluate.simulate_lanes import Lane, LaneSimulation, simulate_lanes

__all__ = ["ReplayConfig", "ReplaySummary", "replay_bank"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplayConfig:
    """One allocator replayed on `banks` (several only for the deadline planner: one per backend)."""

    banks: tuple[Path, ...]
    allocator: str = "difficulty"
    budget_samples: int | None = None
    budget_tokens: int | None = None
    budget_seconds: float | None = None
    greedy: bool = False
    seeds: int = 20
    table: Path | None = None
    quota_factor: float | None = None
    confidence_weight: float | None = None
    greedy_weight: float = 1.0
    verifier_weight: float | None = None
    request_seconds: float = 0.0

    def __post_init__(self) -> None:
        if not self.banks:
            raise ConfigError("give at least one bank (--bank)")
        if len(self.banks) > 1 and self.allocator != "deadline":
            raise ConfigError("several --bank files (one per backend) need --allocator deadline")
        if (self.budget_samples is None) == (self.budget_tokens is None):
            raise ConfigError("give exactly one of --budget-samples and --budget-tokens")
        if self.seeds < 1:
            raise ConfigError(f"--seeds must be >= 1, got {self.seeds}")

    @property
    def planned(self) -> bool:
        """The deadline planner over lanes (banks), rather than the one-bank simulator."""
        return self.allocator == "deadline" and self.budget_seconds is not None


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplaySummary:
    result: SimulationResult
    uniform: SimulationResult
    oracle: float
    questions: int
    figures: dict[str, object]


def replay_bank(config: ReplayConfig) -> ReplaySummary:
    """The allocator's mean accuracy and tokens over `config.seeds` shuffles, uniform's and the
    oracle's; `figures` is what `bank simulate` prints as its last JSON line."""
    questions = load_bank(config.banks[0])
    allocator = _allocator(config, questions)
    planned = _plan_on_lanes(config, allocator) if config.planned else None
    result = (
        _as_result(planned, allocator, config.seeds) if planned else _replay(config, questions, allocator)
    )
    uniform = _replay(config, questions, make_allocator("uniform"))
    oracle_budget = config.budget_samples
    if oracle_budget is None:
        oracle_budget = _samples_for_tokens(questions, config.budget_tokens or 0)
    oracle = oracle_accuracy(questions, oracle_budget)
    figures: dict[str, object] = {
        "accuracy": round(result.accuracy, 4),
        "tokens": round(result.tokens, 1),
        "oracle_accuracy": round(oracle, 4),
        "uniform_accuracy": round(uniform.accuracy, 4),
    }
    if planned is not None:
        figures["seconds"] = round(planned.seconds, 2)
        figures["samples_by_lane"] = {k: round(v, 1) for k, v in planned.samples_by_lane.items()}
    if allocator.voting.confidence_weight is not None or allocator.voting.verifier_weight is not None:
        any_vote = oracle_accuracy(questions, oracle_budget, votings=(Voting(), allocator.voting))
        figures["oracle_any_vote_accuracy"] = round(any_vote, 4)
    return ReplaySummary(
        result=result, uniform=uniform, oracle=oracle, questions=len(questions), figures=figures
    )


def _allocator(config: ReplayConfig, questions: list[BankQuestion]) -> Allocator:
    """The allocator asked for; with a calibration table, its targets at this budget and (unless
    weights were given) the vote it was calibrated for."""
    targets, confidence_weight, verifier_weight = None, config.confidence_weight, config.verifier_weight
    if config.table is not None:
        calibration = CalibrationTable.load(config.table)
        targets = calibration.targets_for((config.budget_samples or 0) / len(questions))
        if confidence_weight is None and verifier_weight is None:
            confidence_weight = calibration.voting.confidence_weight
            verifier_weight = calibration.voting.verifier_weight
    return make_allocator(
        config.allocator,
        use_greedy=config.greedy,
        bin_targets=targets,
        quota_factor=config.quota_factor,
        confidence_weight=confidence_weight,
        greedy_weight=config.greedy_weight,
        verifier_weight=verifier_weight,
    )


def _replay(config: ReplayConfig, questions: list[BankQuestion], allocator: Allocator) -> SimulationResult:
    return simulate(
        questions,
        allocator,
        budget_samples=config.budget_samples,
        budget_tokens=config.budget_tokens,
        budget_seconds=config.budget_seconds,
        seeds=config.seeds,
    )


def _plan_on_lanes(config: ReplayConfig, allocator: Allocator) -> LaneSimulation:
    """The deadline planner over one bank per backend (lanes named by file stem)."""
    if config.budget_samples is None or config.budget_seconds is None:
        raise ConfigError("--allocator deadline with --budget-seconds needs --budget-samples")
    lanes = [
        Lane(name=path.stem, bank=load_bank(path), request_seconds=config.request_seconds)
        for path in config.banks
    ]
    return simulate_lanes(
        lanes,
        allocator,
        budget_samples=config.budget_samples,
        budget_seconds=config.budget_seconds,
        seeds=config.seeds,
    )


def _as_result(planned: LaneSimulation, allocator: Allocator, seeds: int) -> SimulationResult:
    return SimulationResult(
        allocator=allocator.name,
        accuracy=planned.accuracy,
        tokens=planned.tokens,
        samples_per_question=planned.samples_per_question,
        seeds=seeds,
    )


def _samples_for_tokens(questions: list[BankQuestion], budget_tokens: int) -> int:
    """The oracle's sample budget for a token budget: tokens / mean tokens per sample."""
    mean = statistics.fmean(s.completion_tokens for q in questions for s in q.samples) or 1.0
    return max(0, int(budget_tokens / mean))
