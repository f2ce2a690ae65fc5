"""The built-in allocators, one class each (registered by name in `budgetflow.allocate.registry`):

* `uniform`          the same number of samples everywhere (the baseline);
* `difficulty`       probe every question with two samples, then hand out the rest by estimated
                     marginal gain (`budgetflow.allocate.base`);
* `online`           no probe phase beyond one sample (none with the greedy answer as evidence: it
                     is the first): re-allocate after every sample, by answer clusters rather than
                     raw samples, so a question whose samples agree stops attracting budget (Every
                     Rollout Counts' direction-level view);
* `deadline`         like `online`, but by gain per expected second (each question's observed
                     seconds per sample), for runs with a wall-clock deadline as well as a budget
                     (On Time, Within Budget): slow questions must earn their time;
* `early_stop`       every question samples until its leader is settled (`leader_settled` at 0.85;
                     with a verifier, also not doubted by it), `cap` is hit, or its first four
                     samples all disagree (no mode is forming: more rarely helps);
* `compute_optimal`  (Snell et al.) bin questions by a cheap probe's agreement and give each bin
                     the samples a calibration table says it deserves (`budgetflow bank calibrate`).

With verifier-weighted votes (`Voting.verifier_weight`) an adaptive allocator's priority is the
verifier's doubt about the leading answer over (1 + samples drawn): samples spread evenly except
where the verifier is sure of the leader (`AllocatorBase.verifier_doubt`).
"""

from __future__ import annotations

from dataclasses import dataclass

from budgetflow.allocate.base import AllocatorBase, AllocatorOptions
from budgetflow.answers.voting import ALLOCATOR_STOP_CONFIDENCE, Evidence, leader_settled, top_two
from budgetflow.errors import ConfigError

__all__ = [
    "BINS",
    "EARLY_STOP_DOUBT",
    "PROBE_SAMPLES",
    "ComputeOptimalAllocator",
    "DeadlineAllocator",
    "DifficultyAllocator",
    "EarlyStopAllocator",
    "OnlineAllocator",
    "UniformAllocator",
    "probe_bin",
]

#: early_stop with verifier-weighted votes does not stop while the verifier's doubt about the
#: leader exceeds this. Chosen on the embedded-model bank of benchmarks/allocation.py (0.95: -72%
#: tokens vs vote@16 at +3.4 points; 0.9: -51% at +4.1; no gate: -74% at +1.7); data dependent.
EARLY_STOP_DOUBT = 0.95

#: compute_optimal's probe: the greedy answer and this many samples; questions fall in BINS bins.
PROBE_SAMPLES = 2
BINS = 3


@dataclass(frozen=True, slots=True, kw_only=True)
class UniformAllocator(AllocatorBase):
    """The budget spread evenly over the questions."""

    @property
    def adaptive(self) -> bool:
        return False

    def priority(self, evidence: Evidence) -> float:
        return 0.0

    @classmethod
    def from_options(cls, options: AllocatorOptions) -> UniformAllocator:
        return cls(name="uniform", use_greedy=options.use_greedy, voting=options.voting())


@dataclass(frozen=True, slots=True, kw_only=True)
class DifficultyAllocator(AllocatorBase):
    """Two probe samples per question, then by marginal gain."""

    def priority(self, evidence: Evidence) -> float:
        return self.gain(evidence)

    @classmethod
    def from_options(cls, options: AllocatorOptions) -> DifficultyAllocator:
        return cls(
            name="difficulty",
            probe=2,
            use_greedy=options.use_greedy,
            voting=options.voting(),
            quota_factor=options.quota_factor,
            greedy_doubt=options.greedy_doubt(),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class OnlineAllocator(AllocatorBase):
    """One probe sample (none with the greedy answer as evidence), then by marginal gain."""

    def priority(self, evidence: Evidence) -> float:
        return self.gain(evidence)

    @classmethod
    def from_options(cls, options: AllocatorOptions) -> OnlineAllocator:
        return cls(
            name="online",
            probe=0 if options.use_greedy else 1,
            use_greedy=options.use_greedy,
            voting=options.voting(),
            quota_factor=options.quota_factor,
            greedy_doubt=options.greedy_doubt(),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadlineAllocator(AllocatorBase):
    """Marginal gain per expected second of the question (its observed seconds per sample)."""

    def priority(self, evidence: Evidence) -> float:
        drawn = len(evidence.answers)
        gain = self.gain(evidence)
        return gain / max(evidence.seconds / drawn, 1e-6) if drawn else gain

    @classmethod
    def from_options(cls, options: AllocatorOptions) -> DeadlineAllocator:
        return cls(
            name="deadline",
            probe=1,
            use_greedy=options.use_greedy,
            voting=options.voting(),
            quota_factor=options.quota_factor,
            greedy_doubt=options.greedy_doubt(),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class EarlyStopAllocator(AllocatorBase):
    """Sample every question until its leader is settled, `cap` is hit or it looks hopeless.

    Defaults (stop at confidence 0.85, give up after 4 disagreeing samples) were chosen on the
    embedded-model bank of benchmarks/allocation.py: 60% fewer tokens than vote@16 for -0.2
    points there, where 0.95 and 6 saved 25%. They are data dependent: on questions with many
    near-tied answers, raise both. With verifier-weighted votes it also keeps sampling while the
    verifier doubts the settled leader more than `stop_doubt` (`EARLY_STOP_DOUBT`)."""

    stop_confidence: float = ALLOCATOR_STOP_CONFIDENCE
    hopeless_after: int = 4
    stop_doubt: float | None = None

    def priority(self, evidence: Evidence) -> float:
        drawn = len(evidence.answers)
        if self.cap is not None and drawn >= self.cap:
            return 0.0
        leader, runner_up = top_two(self.voting.votes(evidence))
        settled = leader_settled(leader, runner_up, self.stop_confidence)
        doubt = self.verifier_doubt(evidence)
        if self.stop_doubt is not None and doubt is not None and doubt > self.stop_doubt:
            settled = False  # the votes agree, but the verifier doubts their answer: go on
        hopeless = drawn >= self.hopeless_after and leader <= 1
        return 0.0 if settled or hopeless else 1.0 / (1 + drawn)

    @classmethod
    def from_options(cls, options: AllocatorOptions) -> EarlyStopAllocator:
        if options.stop_confidence is not None and not 0.5 < options.stop_confidence < 1:
            raise ConfigError(f"stop_confidence must be in (0.5, 1), got {options.stop_confidence}")
        return cls(
            name="early_stop",
            probe=2,
            cap=options.cap,
            use_greedy=options.use_greedy,
            voting=options.voting(),
            greedy_doubt=options.greedy_doubt(),
            stop_confidence=options.stop_confidence or ALLOCATOR_STOP_CONFIDENCE,
            hopeless_after=options.hopeless_after,
            stop_doubt=EARLY_STOP_DOUBT if options.verifier_weight is not None else None,
        )


def probe_bin(evidence: Evidence) -> int:
    """0 (easy) .. 2 (hard) from the greedy answer and the first two samples."""
    probe = [evidence.greedy, *evidence.answers[:PROBE_SAMPLES]]
    stated = [a for a in probe if a is not None]
    if not stated:
        return BINS - 1
    agreeing = max(stated.count(a) for a in stated)
    return {3: 0, 2: 1}.get(agreeing, 2)


@dataclass(frozen=True, slots=True, kw_only=True)
class ComputeOptimalAllocator(AllocatorBase):
    """Each difficulty bin's target samples per question (`bin_targets`, from a calibration table)."""

    bin_targets: tuple[int, ...]

    def priority(self, evidence: Evidence) -> float:
        drawn = len(evidence.answers)
        return 1.0 / (1 + drawn) if drawn < self.bin_targets[probe_bin(evidence)] else 0.0

    @classmethod
    def from_options(cls, options: AllocatorOptions) -> ComputeOptimalAllocator:
        if options.bin_targets is None:
            raise ConfigError("compute_optimal needs a calibration table (budgetflow bank calibrate)")
        if len(options.bin_targets) != BINS:
            raise ConfigError(f"compute_optimal needs {BINS} bin targets, got {len(options.bin_targets)}")
        return cls(
            name="compute_optimal",
            probe=PROBE_SAMPLES,
            use_greedy=True,
            voting=options.voting(),
            greedy_doubt=options.greedy_doubt(),
            bin_targets=options.bin_targets,
        )
