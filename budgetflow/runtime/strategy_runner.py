"""Drive one strategy for one unit: ask it, do what it asks (sample, score), repeat until it finishes.

Every request goes through the unit's `draw` (the one draw step of the execution core): when the
budget refuses a draw it is halved down to one sample; when not even one fits — a sample, a
judge or a verifier call alike — the strategy stops and answers with the majority of what it has
(a starved question still gets the best answer it has, and the run goes on). Every decision is
an event on the run's stream; the outcome's usage is what the unit's ledger settled.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from budgetflow.answers.extract import extract_answer
from budgetflow.answers.voting import majority_answer
from budgetflow.backends.base import Backend
from budgetflow.concurrency import run_all
from budgetflow.errors import BudgetExceeded, ConfigError
from budgetflow.events import EventStream, StrategyDecided
from budgetflow.runtime.context import RunContext, Unit
from budgetflow.strategies.base import Decision, Draw, Finish, Sample, Strategy, Verify
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
    budget_exhausted: bool = False


async def run_strategy(
    strategy: Strategy,
    backend: Backend | Unit,
    messages: tuple[Message, ...],
    *,
    sampling: SamplingParams,
    extract: AnswerExtractor = extract_answer,
    events: EventStream | None = None,
    question_id: str = "",
    max_rounds: int = 256,
    lane: int = 0,
) -> StrategyOutcome:
    """Run `strategy` to completion on one conversation.

    `backend` is a unit of a run (`RunContext.unit`) or a bare backend (a one-unit run is made
    for it). `sampling` supplies max_tokens, stop strings, top_p and the base seed; each `Draw`
    sets the temperature and count and may override the rest. Seeds follow the run's seed policy
    (`seed_for`): every rollout of the unit draws a fresh, reproducible seed. `lane` picks the
    run's endpoint (0: its backend; a plan role's own endpoint otherwise).
    """
    unit = backend if isinstance(backend, Unit) else _one_unit(backend, events, question_id)
    samples: list[Sample] = []
    for round_index in range(max_rounds):
        decision = strategy.decide(tuple(samples))
        _emit_decision(unit.context.events, unit.id, strategy.name, decision)
        if isinstance(decision, Finish):
            return _outcome(unit, decision.answer, decision.reason, samples, round_index)
        if isinstance(decision, Verify):
            scored = await _score(samples, decision, messages, unit, lane)
            if scored is None:
                return _starved(unit, strategy, samples, round_index)
            samples = scored
            continue
        response = await unit.draw(_request_for(decision, messages, sampling), lane=lane)
        if response is None:
            return _starved(unit, strategy, samples, round_index)
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


def _one_unit(backend: Backend, events: EventStream | None, question_id: str) -> Unit:
    context = RunContext(backend, events=events)
    return context.unit(question_id or "unit", index=0, kind="strategy")


def _outcome(
    unit: Unit, answer: str | None, reason: str, samples: list[Sample], rounds: int, *, starved: bool = False
) -> StrategyOutcome:
    return StrategyOutcome(
        answer=answer,
        reason=reason,
        samples=tuple(samples),
        usage=unit.usage,
        rounds=rounds,
        budget_exhausted=starved,
    )


def _starved(unit: Unit, strategy: Strategy, samples: list[Sample], rounds: int) -> StrategyOutcome:
    """The budget refused a draw, a judge or a verifier: answer with the majority of what is there."""
    answer, _ = majority_answer([s.answer for s in samples if not s.tag.startswith("aux")])
    reason = f"budget exhausted after {len(samples)} samples"
    _emit_decision(unit.context.events, unit.id, strategy.name, Finish(answer=answer, reason=reason))
    return _outcome(unit, answer, reason, samples, rounds, starved=True)


async def _score(
    samples: list[Sample], verify: Verify, messages: tuple[Message, ...], unit: Unit, lane: int = 0
) -> list[Sample] | None:
    """The samples with the verifier's scores, or None when the budget refuses a verifier call
    (the verifier's requests go through the unit's ledger like any other)."""
    if any(not 0 <= index < len(samples) for index in verify.indices):
        raise ConfigError(f"Verify asked for samples {verify.indices}, but only {len(samples)} exist")
    backend = unit.journaled(lane)
    try:
        scores = await run_all(
            verify.verifier.score(messages, samples[i].trace, backend=backend) for i in verify.indices
        )
    except BudgetExceeded:
        unit.refused = True
        return None
    scored = list(samples)
    for index, value in zip(verify.indices, scores, strict=True):
        scored[index] = replace(scored[index], score=float(value))
    return scored


def _request_for(draw: Draw, messages: tuple[Message, ...], sampling: SamplingParams) -> Request:
    params = sampling.for_draw(
        temperature=draw.temperature,
        max_tokens=draw.max_tokens or sampling.max_tokens,
        stop=sampling.stop if draw.stop is None else draw.stop,
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
    event.unit_id = question_id  # the decision is the unit's: the journal files it under it
    events.emit(event)
