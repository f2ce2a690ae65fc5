"""Sequential and parallel revision: `refine` (critique and rewrite, n rounds) and `synthesize`
(read N parallel reasoning paths, write one final answer, as in ParaThinker / mixture-of-agents)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from budgetflow.answers.voting import majority_answer
from budgetflow.errors import ConfigError
from budgetflow.prompts import load_prompt
from budgetflow.strategies.base import Decision, Draw, Finish, Sample
from budgetflow.types import Message

__all__ = ["Refine", "Synthesize"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Refine:
    """A greedy first answer, then `rounds` rounds of "check and correct your solution"."""

    rounds: int = 2
    temperature: float = 0.0

    def __post_init__(self) -> None:
        if self.rounds < 0:
            raise ConfigError(f"refine needs rounds >= 0, got {self.rounds}")

    @property
    def name(self) -> str:
        return f"refine@{self.rounds}"

    def decide(self, samples: Sequence[Sample]) -> Decision:
        if not samples:
            return Draw(n=1, temperature=0.0, tag="draft")
        latest = samples[-1]
        if len(samples) > self.rounds:
            return Finish(answer=latest.answer, reason=f"revised {len(samples) - 1} times")
        critique = (Message("assistant", latest.trace), Message("user", load_prompt("refine")))
        return Draw(n=1, temperature=self.temperature, append=critique, tag=f"revision{len(samples)}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Synthesize:
    """`n` parallel paths at `temperature`, then one greedy synthesis that reads them all."""

    n: int = 4
    temperature: float = 0.7
    max_path_characters: int = 1500

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ConfigError(f"synthesize needs n >= 1, got {self.n}")

    @property
    def name(self) -> str:
        return f"synthesize@{self.n}"

    def decide(self, samples: Sequence[Sample]) -> Decision:
        paths = [s for s in samples if s.tag == "path"]
        if len(paths) < self.n:
            return Draw(n=self.n - len(paths), temperature=self.temperature, tag="path")
        final = [s for s in samples if s.tag == "synthesis"]
        if not final:
            listing = "\n\n".join(
                f"Solution {i + 1}:\n{p.trace[: self.max_path_characters]}" for i, p in enumerate(paths)
            )
            prompt = load_prompt("synthesize").replace("{solutions}", listing)
            return Draw(n=1, temperature=0.0, append=(Message("user", prompt),), tag="synthesis")
        if final[0].answer is not None:
            return Finish(answer=final[0].answer, reason=f"synthesis of {len(paths)} paths")
        answer, votes = majority_answer([p.answer for p in paths])
        return Finish(answer=answer, reason="synthesis stated no answer; majority of paths", votes=votes)
