"""`nothink`: run any strategy with the backend's thinking switched off (NoThinking).

Reasoning models with a thinking switch (Qwen3-style templates on vLLM / SGLang) answer directly;
backends without a thinking mode are unaffected by `thinking=False`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from budgetflow.strategies.base import Decision, Draw, Sample, Strategy

__all__ = ["NoThink"]


@dataclass(frozen=True, slots=True)
class NoThink:
    inner: Strategy

    @property
    def name(self) -> str:
        return f"nothink:{self.inner.name}"

    def decide(self, samples: Sequence[Sample]) -> Decision:
        decision = self.inner.decide(samples)
        return replace(decision, thinking=False) if isinstance(decision, Draw) else decision
