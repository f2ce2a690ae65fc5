"""Drive one strategy for one question: ask it, do what it asks (sample, score), repeat until it finishes.

When the budget refuses a draw, the runner asks for fewer samples (halving down to one); when
not even one fits, it stops and answers with the majority of what it has (a starved question
still gets the best answer it has). Every decision is an event on the run's stream.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, replace

from budgetflow.answers.extract import extract_answer
from budgetflow.backends.base import Backend
from budgetflow.errors import BudgetExceeded, ConfigError
from budgetflow.runtime.events import EventStream, StrategyDecided
from budgetflow.strategies.base import Decision, Draw, Finish, Sample, Strategy, Verify
from budgetflow.strategies.vote import majority_answer
from budgetflow.types import Message, Request, Response, SamplingParams, Usage

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
    budget_exhausted: bool = False


async def run_strategy(
    strategy: Strategy,
    backend: Backend,
    messages: tuple[Message, ...],
    *,
    sampling: SamplingParams,
    extract: AnswerExtractor = extract_answer,
    events: EventStream | None = None,
    question_id: str = "",
    max_rounds: int = 256,
) -> StrategyOutcome:
    """Run `strategy` to completion on one conversation.

    `sampling` supplies max_tokens, stop strings, top_p and the base seed; each `Draw` sets the
    temperature and count and may override the rest. Round `r` uses seed `base + 1000 * r` so
    that rounds draw fresh samples yet a seeded run is reproducible.
    """
    samples: list[Sample] = []
    usage = Usage()
    for round_index in range(max_rounds):
        decision = strategy.decide(tuple(samples))
        _emit_decision(events, question_id, strategy.name, decision)
        if isinstance(decision, Finish):
            return StrategyOutcome(
                answer=decision.answer,
                reason=decision.reason,
                samples=tuple(samples),
                usage=usage,
                rounds=round_index,
            )
        if isinstance(decision, Verify):
            samples = await _score(samples, decision, messages, backend)
            continue
        response = await _draw_within_budget(backend, _request_for(decision, messages, sampling, round_index))
        if response is None:
            answer, _ = majority_answer([s.answer for s in samples if not s.tag.startswith("aux")])
            reason = f"budget exhausted after {len(samples)} samples"
            _emit_decision(events, question_id, strategy.name, Finish(answer=answer, reason=reason))
            return StrategyOutcome(
                answer=answer,
                reason=reason,
                samples=tuple(samples),
                usage=usage,
                rounds=round_index,
                budget_exhausted=True,
            )
        usage = usage + response.usage
        samples.extend(
            Sample(
                text=c.text,
                answer=extract(decision.prefill + c.text),
                completion_tokens=c.completion_tokens,
                finish_reason=c.finish_reason,
                tag=decision.tag,
                prefill=decision.prefill,
            )
            for c in response.completions
        )
    raise ConfigError(f"strategy {strategy.name} did not finish within {max_rounds} rounds")


async def _score(
    samples: list[Sample], verify: Verify, messages: tuple[Message, ...], backend: Backend
) -> list[Sample]:
    if any(not 0 <= index < len(samples) for index in verify.indices):
        raise ConfigError(f"Verify asked for samples {verify.indices}, but only {len(samples)} exist")
    scores = await asyncio.gather(
        *(verify.verifier.score(messages, samples[i].trace, backend=backend) for i in verify.indices)
    )
    scored = list(samples)
    for index, value in zip(verify.indices, scores, strict=True):
        scored[index] = replace(scored[index], score=float(value))
    return scored


async def _draw_within_budget(backend: Backend, request: Request) -> Response | None:
    """The response to `request`, or to a smaller one if the budget refuses it; None if nothing fits."""
    while True:
        try:
            return await backend.complete(request)
        except BudgetExceeded:
            if request.n == 1:
                return None
            n = request.n // 2
            keep = None if request.keep_first is None else min(request.keep_first, n)
            request = replace(request, n=n, keep_first=keep)


def _request_for(
    draw: Draw, messages: tuple[Message, ...], sampling: SamplingParams, round_index: int
) -> Request:
    seed = None if sampling.seed is None else sampling.seed + 1000 * round_index
    params = replace(
        sampling,
        temperature=draw.temperature,
        seed=seed,
        stop=sampling.stop if draw.stop is None else draw.stop,
        max_tokens=draw.max_tokens or sampling.max_tokens,
    )
    return Request(
        messages=messages + draw.append,
        sampling=params,
        n=draw.n,
        keep_first=draw.keep_first,
        prefill=draw.prefill,
        thinking=draw.thinking,
    )


def _emit_decision(events: EventStream | None, question_id: str, strategy: str, decision: Decision) -> None:
    if events is None or not events.active:
        return
    if isinstance(decision, Draw):
        event = StrategyDecided(question_id=question_id, strategy=strategy, action="draw", n=decision.n)
    elif isinstance(decision, Verify):
        event = StrategyDecided(
            question_id=question_id, strategy=strategy, action="verify", n=len(decision.indices)
        )
    else:
        event = StrategyDecided(
            question_id=question_id,
            strategy=strategy,
            action="finish",
            answer=decision.answer,
            reason=decision.reason,
        )
    events.emit(event)
