"""`beam`: step-level search with a step scorer (verifier).

Steps end at `step_stop` (a newline by default). Each level's nodes are scored; the next level
keeps `width` nodes, preferring semantically distinct ones (ETS: one node per intermediate answer
before a second of the same), and hands the level's `width x branching` expansions to the open
nodes in proportion to softmax(score / `balance`) (REBASE: better nodes get wider subtrees). A
node is complete when its step states a final answer; the best-scored complete node answers.

The tree lives in the samples' tags (`step:<depth>:<parent sample index>`), so `decide` stays a
pure function of what was drawn.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from budgetflow.errors import ConfigError
from budgetflow.strategies.base import Decision, Draw, Finish, Sample, Verifier, Verify
from budgetflow.strategies.prune import intermediate_answer

__all__ = ["Beam", "allocate_widths", "diverse_top"]

_FINAL = re.compile(r"answer\s*(?:is\s*:?|:|=)|\\boxed\{", re.IGNORECASE)


def _key(sample: Sample) -> str:
    """The intermediate answer a partial trace has reached: its last number (ETS's semantic key),
    or its last words when it has none."""
    return intermediate_answer(sample.trace) or sample.trace.strip()[-40:]


def diverse_top(indices: Sequence[int], samples: Sequence[Sample], width: int) -> list[int]:
    """Up to `width` of `indices`, best score first, taking one per semantic key before repeats."""
    ranked = sorted(indices, key=lambda i: (-(samples[i].score or 0.0), i))
    chosen: list[int] = []
    seen: set[str] = set()
    for index in ranked:
        if len(chosen) < width and _key(samples[index]) not in seen:
            chosen.append(index)
            seen.add(_key(samples[index]))
    for index in ranked:
        if len(chosen) < width and index not in chosen:
            chosen.append(index)
    return chosen


def allocate_widths(scores: Sequence[float], total: int, balance: float) -> list[int]:
    """Split `total` expansions in proportion to softmax(score / balance); every node gets >= 1."""
    if not scores:
        return []
    top = max(scores)
    weights = [math.exp((s - top) / balance) for s in scores]
    spare = max(0, total - len(scores))
    shares = [spare * w / sum(weights) for w in weights]
    widths = [1 + math.floor(share) for share in shares]
    leftovers = sorted(range(len(scores)), key=lambda i: (-(shares[i] - math.floor(shares[i])), i))
    for index in leftovers[: total - sum(widths)]:
        widths[index] += 1
    return widths


@dataclass(frozen=True, slots=True, kw_only=True)
class Beam:
    """Beam search over reasoning steps scored by `scorer`."""

    scorer: Verifier
    width: int = 2
    branching: int = 2
    max_steps: int = 6
    temperature: float = 0.7
    balance: float = 0.2
    step_stop: tuple[str, ...] = ("\n",)
    step_tokens: int = 64

    def __post_init__(self) -> None:
        if self.width < 1 or self.branching < 1 or self.max_steps < 1:
            raise ConfigError("beam needs width, branching and max_steps >= 1")
        if self.balance <= 0:
            raise ConfigError(f"beam balance must be > 0, got {self.balance}")

    @property
    def name(self) -> str:
        return f"beam@{self.width}x{self.branching}"

    def decide(self, samples: Sequence[Sample]) -> Decision:
        if not samples:
            return self._expand("", 0, -1, self.width * self.branching)
        candidates: list[int] = []
        for depth in range(1, self.max_steps + 1):
            level = [i for i, s in enumerate(samples) if _depth(s) == depth]
            unscored = tuple(i for i in level if samples[i].score is None)
            if unscored:
                return Verify(indices=unscored, verifier=self.scorer)
            frontier = diverse_top(level, samples, self.width)
            candidates += [i for i in frontier if self._complete(samples[i], depth)]
            open_nodes = [i for i in frontier if not self._complete(samples[i], depth)]
            if not open_nodes:
                break
            widths = allocate_widths(
                [samples[i].score or 0.0 for i in open_nodes], self.width * self.branching, self.balance
            )
            for node, width in zip(open_nodes, widths, strict=True):
                if not any(_parent(s) == node for s in samples):
                    return self._expand(samples[node].trace + "\n", depth, node, width)
        return self._finish(samples, candidates)

    def _complete(self, sample: Sample, depth: int) -> bool:
        return depth >= self.max_steps or bool(_FINAL.search(sample.text)) or not sample.text.strip()

    def _expand(self, prefill: str, depth: int, parent: int, n: int) -> Draw:
        return Draw(
            n=n,
            temperature=self.temperature,
            prefill=prefill,
            stop=self.step_stop,
            max_tokens=self.step_tokens,
            tag=f"step:{depth + 1}:{parent}",
        )

    def _finish(self, samples: Sequence[Sample], candidates: list[int]) -> Finish:
        pool = candidates or list(range(len(samples)))
        best = max(pool, key=lambda i: (samples[i].answer is not None, samples[i].score or 0.0, -i))
        return Finish(
            answer=samples[best].answer,
            reason=f"best of {len(candidates)} complete paths (score {samples[best].score or 0.0:.2f})",
        )


def _depth(sample: Sample) -> int:
    parts = sample.tag.split(":")
    return int(parts[1]) if len(parts) == 3 and parts[0] == "step" else 0


def _parent(sample: Sample) -> int:
    parts = sample.tag.split(":")
    return int(parts[2]) if len(parts) == 3 and parts[0] == "step" else -2
