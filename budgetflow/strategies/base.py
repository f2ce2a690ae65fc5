"""What every strategy shares: observed samples in, a decision out.

A strategy is a pure policy. `decide(samples)` looks at every sample drawn so far for one question
and returns one decision:

* `Draw`   — sample more: how many, at what temperature, optionally with extra messages appended
             to the question (critiques, outlines, candidate solutions), an assistant `prefill` to
             continue (tree search over steps), its own stop strings and token cap, and a `tag`
             copied onto the resulting samples so later decisions can tell them apart;
* `Verify` — score some samples with a verifier (a function, an LLM judge, a reward endpoint);
             the scores come back on the samples;
* `Finish` — the final answer and why the strategy stopped.

Samples whose `tag` starts with `aux:` (outlines, critiques, judgements) are working material,
not candidate answers: they never vote.

It performs no I/O and keeps no state between calls; the runner does the sampling and scoring.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from budgetflow.backends.base import Backend
from budgetflow.types import Message

__all__ = ["Decision", "Draw", "Finish", "Sample", "Strategy", "Verifier", "Verify"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Sample:
    """One completion as a strategy sees it.

    `text` is what was generated; with a prefill, `prefill + text` is the whole trace. `score` is
    set once a verifier has scored the sample.
    """

    text: str
    answer: str | None
    completion_tokens: int
    finish_reason: str = "stop"
    tag: str = ""
    prefill: str = ""
    score: float | None = None

    @property
    def trace(self) -> str:
        return self.prefill + self.text


@dataclass(frozen=True, slots=True, kw_only=True)
class Draw:
    """Ask for `n` more samples at `temperature` (0 = greedy).

    With `keep_first=k`, start `n` samples but keep only the first `k` to finish; the rest are
    stopped mid-generation. `thinking=False` asks backends with a thinking switch to skip it.
    """

    n: int
    temperature: float
    keep_first: int | None = None
    append: tuple[Message, ...] = ()
    prefill: str = ""
    stop: tuple[str, ...] | None = None
    max_tokens: int | None = None
    tag: str = ""
    thinking: bool | None = None


class Verifier(Protocol):
    """Scores a completion for a conversation: higher is better (a probability, a reward).

    `backend` is the question's own (budgeted) backend, for verifiers that ask a model; spend on
    verification is charged like any other request."""

    async def score(self, messages: tuple[Message, ...], completion: str, *, backend: Backend) -> float: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Verify:
    """Score the samples at `indices` with `verifier`."""

    indices: tuple[int, ...]
    verifier: Verifier


@dataclass(frozen=True, slots=True, kw_only=True)
class Finish:
    """Stop: `answer` is the final answer (None when no sample stated one); `reason` says why."""

    answer: str | None
    reason: str
    votes: int = 0


Decision = Draw | Verify | Finish


class Strategy(Protocol):
    """A pure decision function over the samples seen so far for one question."""

    @property
    def name(self) -> str: ...

    def decide(self, samples: Sequence[Sample]) -> Decision: ...
