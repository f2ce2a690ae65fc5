"""Drive one strategy for one question: ask it, sample what it asks for, repeat until it finishes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from budgetflow.answers.extract import extract_answer
from budgetflow.backends.base import Backend
from budgetflow.errors import ConfigError
from budgetflow.strategies.base import Draw, Finish, Sample, Strategy
from budgetflow.types import Message, Request, SamplingParams, Usage

__all__ = ["StrategyOutcome", "run_strategy"]

AnswerExtractor = Callable[[str], str | None]


@dataclass(frozen=True, slots=True, kw_only=True)
class StrategyOutcome:
    """What a strategy concluded for one question, with everything it saw and spent."""

    answer: str | None
    reason: str
    samples: tuple[Sample, ...]
    usage: Usage
    rounds: int


async def run_strategy(
    strategy: Strategy,
    backend: Backend,
    messages: tuple[Message, ...],
    *,
    sampling: SamplingParams,
    extract: AnswerExtractor = extract_answer,
    max_rounds: int = 64,
) -> StrategyOutcome:
    """Run `strategy` to completion on one conversation.

    `sampling` supplies max_tokens, stop strings, top_p and the base seed; each `Draw` sets the
    temperature and count. Round `r` uses seed `base + 1000 * r` so that rounds draw fresh samples
    yet a seeded run is reproducible.
    """
    samples: list[Sample] = []
    usage = Usage()
    for round_index in range(max_rounds):
        decision = strategy.decide(tuple(samples))
        if isinstance(decision, Finish):
            return StrategyOutcome(
                answer=decision.answer,
                reason=decision.reason,
                samples=tuple(samples),
                usage=usage,
                rounds=round_index,
            )
        response = await backend.complete(_request_for(decision, messages, sampling, round_index))
        usage = usage + response.usage
        samples.extend(
            Sample(
                text=c.text,
                answer=extract(c.text),
                completion_tokens=c.completion_tokens,
                finish_reason=c.finish_reason,
            )
            for c in response.completions
        )
    raise ConfigError(f"strategy {strategy.name} did not finish within {max_rounds} rounds")


def _request_for(
    draw: Draw, messages: tuple[Message, ...], sampling: SamplingParams, round_index: int
) -> Request:
    seed = None if sampling.seed is None else sampling.seed + 1000 * round_index
    params = replace(sampling, temperature=draw.temperature, seed=seed)
    return Request(messages=messages, sampling=params, n=draw.n)
