"""`outline` (OPE): generate diverse outlines first, then one solution path per outline; the paths vote."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from budgetflow.answers.voting import majority_answer
from budgetflow.errors import ConfigError
from budgetflow.prompts import load_prompt
from budgetflow.strategies.base import Decision, Draw, Finish, Sample
from budgetflow.types import Message

__all__ = ["Outline"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Outline:
    """`n` outlines at a high `outline_temperature` (diversity), then a path per outline."""

    n: int = 4
    outline_temperature: float = 1.0
    path_temperature: float = 0.0
    outline_tokens: int = 64

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ConfigError(f"outline needs n >= 1, got {self.n}")

    @property
    def name(self) -> str:
        return f"outline@{self.n}"

    def decide(self, samples: Sequence[Sample]) -> Decision:
        outlines = [s for s in samples if s.tag == "aux:outline"]
        if not outlines:
            return Draw(
                n=self.n,
                temperature=self.outline_temperature,
                append=(Message("user", load_prompt("outline")),),
                max_tokens=self.outline_tokens,
                stop=(),
                tag="aux:outline",
            )
        paths = [s for s in samples if s.tag.startswith("path:")]
        if len(paths) < len(outlines):
            plan = outlines[len(paths)]
            follow = (
                Message("user", load_prompt("outline")),
                Message("assistant", plan.text),
                Message("user", load_prompt("follow_outline")),
            )
            return Draw(n=1, temperature=self.path_temperature, append=follow, tag=f"path:{len(paths)}")
        answer, votes = majority_answer([p.answer for p in paths])
        return Finish(answer=answer, reason=f"majority of {len(paths)} outline-guided paths", votes=votes)
