"""What every strategy shares: observed samples in, a decision out.

A strategy is a pure policy. `decide(samples)` looks at every sample drawn so far for one question
and returns either `Draw` (ask the sampler for more) or `Finish` (the answer, and why it stopped).
It performs no I/O and keeps no state between calls; the runner does the sampling.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

__all__ = ["Decision", "Draw", "Finish", "Sample", "Strategy"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Sample:
    """One completion as a strategy sees it."""

    text: str
    answer: str | None
    completion_tokens: int
    finish_reason: str = "stop"


@dataclass(frozen=True, slots=True, kw_only=True)
class Draw:
    """Ask for `n` more samples at `temperature` (0 = greedy).

    With `keep_first=k`, start `n` samples but keep only the first `k` to finish; the rest are
    stopped mid-generation.
    """

    n: int
    temperature: float
    keep_first: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Finish:
    """Stop: `answer` is the final answer (None when no sample stated one); `reason` says why."""

    answer: str | None
    reason: str
    votes: int = 0


Decision = Draw | Finish


class Strategy(Protocol):
    """A pure decision function over the samples seen so far for one question."""

    @property
    def name(self) -> str: ...

    def decide(self, samples: Sequence[Sample]) -> Decision: ...
