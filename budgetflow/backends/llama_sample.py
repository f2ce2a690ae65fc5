"""One sample being decoded: its seeded generator, its text, and when it stops.

Shared by both decoding paths of the embedded model (one request at a time in `LlamaEngine`,
many at once in `ContinuousBatcher`), so stop strings, `max_tokens`, the streaming hold-back and
log-probabilities behave the same in both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from budgetflow.backends.token_sampling import FloatArray, sample_next_token, token_logprob
from budgetflow.types import SamplingParams

__all__ = ["Sample", "SequenceResult", "TextCallback", "finishing_order"]

#: `on_text(sample_index, delta)`: text as it is generated.
TextCallback = Callable[[int, str], None]


@dataclass(slots=True)
class SequenceResult:
    """One finished sample: its text, why it stopped, how many tokens it generated, and (when
    asked for) the mean log-probability of the tokens it sampled."""

    text: str
    finish_reason: str
    tokens: int
    mean_logprob: float | None = None


@dataclass(slots=True)
class Sample:
    """Sample `index` of a request: text so far, and why it finished (None while it runs)."""

    index: int
    generator: np.random.Generator
    data: bytearray = field(default_factory=bytearray)
    tokens: int = 0
    finish_reason: str | None = None
    text: str = ""
    finished_at: int = -1
    emitted: int = 0
    logprob_sum: float = 0.0
    scored: int = 0

    def mean_logprob(self) -> float | None:
        return self.logprob_sum / self.scored if self.scored else None

    def draw(self, logits: FloatArray, sampling: SamplingParams) -> int:
        """The next token from `logits` (-1 once finished), its log-probability noted if asked for."""
        if self.finish_reason is not None:
            return -1
        token = sample_next_token(
            logits, temperature=sampling.temperature, top_p=sampling.top_p, generator=self.generator
        )
        if sampling.logprobs:
            self.logprob_sum += token_logprob(logits, token)
            self.scored += 1
        return token

    def accept(
        self, piece: bytes | None, sampling: SamplingParams, *, hold: int, on_text: TextCallback | None
    ) -> bool:
        """Append a token's bytes (`None`: end of generation); False once the sample has finished.
        Text that could still be the start of a stop string is held back from `on_text`."""
        if self.finish_reason is not None:
            return False
        if piece is None:
            return self.finish("stop", on_text)
        self.data += piece
        self.tokens += 1
        text = self.data.decode("utf-8", errors="ignore")
        cut = min((text.find(s) for s in sampling.stop if s in text), default=-1)
        if cut >= 0:
            self.data = bytearray(text[:cut].encode("utf-8"))
            return self.finish("stop", on_text)
        if self.tokens >= sampling.max_tokens:
            return self.finish("length", on_text)
        self._emit(text, hold, on_text)
        return True

    def finish(self, reason: str, on_text: TextCallback | None) -> bool:
        self.finish_reason = reason
        self.text = self.data.decode("utf-8", errors="replace")
        self._emit(self.text, 0, on_text)
        return False

    def result(self) -> SequenceResult:
        return SequenceResult(self.text, self.finish_reason or "stop", self.tokens, self.mean_logprob())

    def _emit(self, text: str, hold: int, on_text: TextCallback | None) -> None:
        end = len(text) - hold
        if on_text is not None and end > self.emitted:
            on_text(self.index, text[self.emitted : end])
            self.emitted = end


def stop_hold(sampling: SamplingParams) -> int:
    """Characters to hold back while streaming: one less than the longest stop string."""
    return max((len(s) for s in sampling.stop), default=1) - 1


def finishing_order(samples: list[Sample]) -> list[Sample]:
    """The samples that finished, in the order they did, then the stopped ones by index.

    (A key that read `len(samples)` inside `list.sort` would see 0: CPython empties a list while
    sorting it, and stopped samples with low indices then came before finished ones.)"""
    return sorted(
        samples, key=lambda s: (s.finished_at < 0, s.finished_at if s.finished_at >= 0 else s.index)
    )
