"""`prune` (DeepPrune-style): grow `n` traces segment by segment and stop redundant ones.

After each segment, live traces are clustered by a predicted-equivalence key (by default the
intermediate answer they have reached: their last number); in each cluster only
`keep_per_cluster` traces go on, the rest stop and lend their vote to their cluster's survivor.
Clusters are never emptied, so answer diversity is kept while duplicated work stops.

Traces live in tags: the first segment of all traces is one draw (`seg:0`, trace id = order),
continuations are `seg:<segment>:<trace id>` with the trace so far as prefill.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from budgetflow.answers.equivalence import normalize_answer
from budgetflow.errors import ConfigError
from budgetflow.strategies.base import Decision, Draw, Finish, Sample

__all__ = ["Prune", "intermediate_answer"]

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def intermediate_answer(trace: str) -> str | None:
    """The cheap default equivalence key: the last number a partial trace mentions."""
    numbers = _NUMBER.findall(trace)
    return numbers[-1] if numbers else None


@dataclass(slots=True)
class _Trace:
    id: int
    segments: list[Sample] = field(default_factory=list)

    @property
    def latest(self) -> Sample:
        return self.segments[-1]

    @property
    def live(self) -> bool:
        return self.latest.finish_reason == "length"


@dataclass(frozen=True, slots=True, kw_only=True)
class Prune:
    """`n` traces, `segment_tokens` at a time, at most `max_segments` segments each."""

    n: int = 8
    temperature: float = 0.7
    segment_tokens: int = 16
    max_segments: int = 8
    keep_per_cluster: int = 1
    equivalence: Callable[[str], str | None] = intermediate_answer

    def __post_init__(self) -> None:
        if self.n < 1 or self.segment_tokens < 1 or self.max_segments < 1 or self.keep_per_cluster < 1:
            raise ConfigError("prune needs n, segment_tokens, max_segments and keep_per_cluster >= 1")

    @property
    def name(self) -> str:
        return f"prune@{self.n}"

    def decide(self, samples: Sequence[Sample]) -> Decision:
        if not samples:
            return Draw(n=self.n, temperature=self.temperature, max_tokens=self.segment_tokens, tag="seg:0")
        traces = _rebuild(samples)
        merged_into = self._pruned(traces)
        waiting = [
            t for t in traces if t.live and t.id not in merged_into and len(t.segments) < self.max_segments
        ]
        if waiting:
            nxt = min(waiting, key=lambda t: (len(t.segments), t.id))
            return Draw(
                n=1,
                temperature=self.temperature,
                prefill=nxt.latest.trace,
                max_tokens=self.segment_tokens,
                tag=f"seg:{len(nxt.segments)}:{nxt.id}",
            )
        return self._finish(traces, merged_into)

    def _pruned(self, traces: list[_Trace]) -> dict[int, int]:
        """trace id -> the surviving trace id it was merged into, decided segment by segment."""
        merged: dict[int, int] = {}
        for segment in range(1, self.max_segments + 1):
            clusters: dict[str, list[int]] = {}
            for trace in traces:
                if trace.id in merged or len(trace.segments) < segment:
                    continue
                if len(trace.segments) == segment and not trace.live:
                    continue  # finished traces are never pruned
                key = self.equivalence(trace.segments[segment - 1].trace)
                if key is not None:
                    clusters.setdefault(key, []).append(trace.id)
            for members in clusters.values():
                for extra in members[self.keep_per_cluster :]:
                    merged[extra] = members[0]
        return merged

    def _finish(self, traces: list[_Trace], merged_into: dict[int, int]) -> Finish:
        weight = Counter(_root(merged_into, t.id) for t in traces)
        votes: Counter[str] = Counter()
        first_text: dict[str, str] = {}
        for trace in traces:
            answer = trace.latest.answer
            if trace.id in merged_into or answer is None:
                continue
            key = normalize_answer(answer)
            votes[key] += weight[trace.id]
            first_text.setdefault(key, answer)
        if not votes:
            return Finish(answer=None, reason="no trace stated an answer")
        best = max(votes, key=lambda key: votes[key])
        stopped = len(merged_into)
        return Finish(
            answer=first_text[best],
            reason=f"{len(traces)} traces, {stopped} pruned as redundant",
            votes=votes[best],
        )


def _root(merged_into: dict[int, int], trace_id: int) -> int:
    while trace_id in merged_into:
        trace_id = merged_into[trace_id]
    return trace_id


def _rebuild(samples: Sequence[Sample]) -> list[_Trace]:
    traces = [_Trace(i, [s]) for i, s in enumerate(s for s in samples if s.tag == "seg:0")]
    for sample in samples:
        parts = sample.tag.split(":")
        if len(parts) == 3 and parts[0] == "seg":
            traces[int(parts[2])].segments.append(sample)
    return traces
