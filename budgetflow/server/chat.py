"""One chat-completions request as a unit of budgetflow's execution core.

Each request is one `RunContext` with one unit, over the server's shared upstream stack (one
concurrency limit for every request), bounded by the budget the request was granted: every
sample, judge and verifier call reserves in the unit's ledger before it is sent, so a request
can never spend more than its grant. `single` sends the client's request as it is (`n`, tools,
response format); any other strategy runs through `run_strategy` and answers with the sample
that carries the chosen answer. `usage` is what the unit's ledger settled — every call's
reported usage, summed — and the `budgetflow` extension lists the calls.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from typing import Any, Final

from budgetflow.answers.extract import extract_answer
from budgetflow.answers.voting import answer_key
from budgetflow.backends.base import Backend, StreamTail
from budgetflow.budget import Budget, Price
from budgetflow.events import Event, EventStream, RequestFinished, UnitCompleted
from budgetflow.runtime.context import EndpointLimits, RunContext, Unit
from budgetflow.runtime.strategy_runner import StrategyOutcome, run_strategy
from budgetflow.server.wire import ChatRequest, InvalidRequest
from budgetflow.strategies.base import Sample
from budgetflow.strategies.parse import parse_strategy
from budgetflow.types import Completion, Request, Spend, Usage

__all__ = ["ChatResult", "ChatRunner", "Progress"]

#: Strategies whose extra rounds cost about this many times their samples.
_COST_FACTORS: Final = {"prune": 2, "refine": 3, "synthesize": 2, "outline": 2}
#: Judged strategies: rounds of (samples + a judgement of each); a judgement is the judge's
#: samples, each reading its template, the question and a solution (bytes: up to ~4 a token).
_JUDGED_ROUNDS: Final = {"best_of_n": 1, "beam": 4}
_JUDGE_SAMPLES: Final = 3
_JUDGE_TEMPLATE_BYTES: Final = 160
_NO_REQUEST_LIMIT: Final = EndpointLimits(concurrency=1 << 30)


@dataclass(frozen=True, slots=True, kw_only=True)
class ChatResult:
    """The choices to send back, what they cost, and the extension describing how."""

    choices: tuple[Completion, ...]
    usage: Usage
    spent: Spend
    extension: dict[str, Any]


@dataclass(slots=True)
class Progress:
    """What a streaming client is told while samples run: calls finished and tokens spent."""

    calls: int = 0
    usage: Usage = field(default_factory=Usage)


class ChatRunner:
    """Runs requests against `upstream` (the server's shared, concurrency-limited stack)."""

    def __init__(
        self, upstream: Backend, *, prices: dict[str, Price] | None = None, request_budget_cap: int
    ) -> None:
        self.upstream = upstream
        self.prices = prices or {}
        self.request_budget_cap = request_budget_cap

    def worst_case(self, chat: ChatRequest) -> int:
        """The most this request may spend: `single` its prompt (as often as the upstream reads
        it) and `n` x max_tokens; a strategy its explicit budget, else its sample count x (prompt
        + max_tokens) x its cost factor, within the server's per-request cap."""
        prompt = chat.prompt_bound
        if chat.served.single:
            copies = self.upstream.prompt_copies(self._request(chat))
            return prompt * copies + chat.sampling.max_tokens * chat.n
        if chat.served.budget_tokens is not None:
            if chat.served.budget_tokens > self.request_budget_cap:
                raise InvalidRequest(
                    f"budgetflow.budget_tokens {chat.served.budget_tokens:,} is over this server's "
                    f"per-request cap of {self.request_budget_cap:,}",
                    param="budgetflow.budget_tokens",
                )
            return chat.served.budget_tokens
        name, _, count = chat.served.spec.partition("@")
        samples = int(count) if count else 8
        return min(_estimate(name, samples, prompt, chat.sampling.max_tokens), self.request_budget_cap)

    def minimum(self, chat: ChatRequest) -> int:
        """The least a request can be run with: `single` its prompt and one generated token (its
        max_tokens is cut to fit); a strategy one whole sample."""
        if chat.served.single:
            return chat.prompt_bound + 1
        return chat.prompt_bound + chat.sampling.max_tokens

    def check(self, chat: ChatRequest) -> None:
        """Refuse what a strategy cannot honour, before anything is reserved or sent."""
        if chat.served.single:
            return
        if chat.uses_tools:
            raise InvalidRequest(
                f"strategy {chat.served.spec} votes over answers and cannot honour tools, tool_choice or "
                "response_format; use single/<model> for them",
                param="model",
            )
        if chat.n != 1:
            raise InvalidRequest(f"strategy {chat.served.spec} returns one choice; use n=1", param="n")

    async def run(
        self,
        chat: ChatRequest,
        *,
        request_id: str,
        budget: Budget,
        on_event: Callable[[Event], None] | None = None,
    ) -> ChatResult:
        quiet = chat.served.single and on_event is None  # one call: its usage is the unit's
        context, calls = self._context(chat, budget, on_event, quiet=quiet)
        unit = context.unit(request_id, index=0, kind="server")
        if chat.served.single:
            request = self._request(chat, fitting=budget.total_tokens)
            response = await unit.draw(request, shrink=False)
            choices = response.completions if response is not None else ()
            if quiet and response is not None:
                calls.record("complete", response.usage)
            extension = _extension(chat, context, calls, samples=len(choices), reason="single sample")
            return ChatResult(choices=choices, usage=unit.usage, spent=unit.spent, extension=extension)
        outcome = await self._strategy(chat, unit)
        chosen = _chosen(outcome)
        extension = _extension(
            chat, context, calls, samples=_candidates(outcome), reason=outcome.reason, answer=outcome.answer
        )
        extension["budget_exhausted"] = outcome.budget_exhausted
        choices = () if chosen is None else (chosen,)
        return ChatResult(choices=choices, usage=unit.usage, spent=unit.spent, extension=extension)

    async def stream_single(
        self, chat: ChatRequest, *, request_id: str, budget: Budget, spent_out: list[Spend]
    ) -> AsyncIterator[str]:
        """The upstream's deltas of one `single` completion as they arrive; what the unit's
        ledger settled is appended to `spent_out` when the stream ends (or is stopped)."""
        context, _ = self._context(chat, budget, None, quiet=True)
        unit = context.unit(request_id, index=0, kind="server")
        try:
            async for delta in unit.stream(self._request(chat, fitting=budget.total_tokens)):
                if not isinstance(delta, StreamTail):
                    yield delta
        finally:
            spent_out.append(unit.spent)

    def _context(
        self,
        chat: ChatRequest,
        budget: Budget,
        on_event: Callable[[Event], None] | None,
        *,
        quiet: bool = False,
    ) -> tuple[RunContext, _CallLog]:
        """A run for one request; its event stream has subscribers (the call log, a streaming
        client's progress) unless `quiet`, when emitting costs nothing."""
        events = EventStream()
        if on_event is not None:
            events.subscribe(on_event)
        calls = _CallLog(None if quiet else events)
        context = RunContext(
            self.upstream,
            budget=budget,
            prices=self.prices,
            limits=_NO_REQUEST_LIMIT,
            events=events,
            seed=chat.sampling.seed,
        )
        return context, calls

    def _request(self, chat: ChatRequest, *, fitting: int | None = None) -> Request:
        """The client's request as budgetflow's; with `fitting`, max_tokens cut so that the worst
        case fits that many tokens (what a key near the end of its budget was granted)."""
        sampling = chat.sampling
        request = Request(
            messages=chat.messages,
            sampling=sampling,
            n=chat.n,
            model=chat.served.upstream_model,
            passthrough=chat.passthrough,
        )
        if fitting is None:
            return request
        copies = self.upstream.prompt_copies(request)
        room = (fitting - chat.prompt_bound * copies) // chat.n
        if room < sampling.max_tokens:
            request = replace(request, sampling=replace(sampling, max_tokens=max(1, room)))
        return request

    async def _strategy(self, chat: ChatRequest, unit: Unit) -> StrategyOutcome:
        strategy = parse_strategy(chat.served.spec)
        kind = chat.served.answer
        return await run_strategy(
            strategy,
            unit,
            chat.messages,
            sampling=chat.sampling,
            extract=lambda text: extract_answer(text, kind),
        )


class _CallLog:
    """Every upstream call of one request (kind, usage, seconds), from the run's event stream."""

    def __init__(self, events: EventStream | None) -> None:
        self.calls: list[dict[str, Any]] = []
        if events is not None:
            events.subscribe(self._on_event)

    def _on_event(self, event: Event) -> None:
        if isinstance(event, RequestFinished):
            self.record(event.kind, event.usage, event.seconds)

    def record(self, kind: str, usage: Usage, seconds: float | None = None) -> None:
        call: dict[str, Any] = {
            "kind": kind,
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
        }
        if seconds is not None:
            call["seconds"] = round(seconds, 4)
        self.calls.append(call)


def _estimate(name: str, samples: int, prompt: int, max_tokens: int) -> int:
    """The most strategy `name` with `samples` samples is expected to spend."""
    sample = prompt + max_tokens
    if name in _JUDGED_ROUNDS:
        judgement = _JUDGE_SAMPLES * (_JUDGE_TEMPLATE_BYTES + prompt + 4 * max_tokens + 4)
        return _JUDGED_ROUNDS[name] * samples * (sample + judgement)
    return samples * sample * _COST_FACTORS.get(name, 1)


def _extension(
    chat: ChatRequest,
    context: RunContext,
    calls: _CallLog,
    *,
    samples: int,
    reason: str,
    answer: str | None = None,
) -> dict[str, Any]:
    return {
        "strategy": chat.served.spec,
        "upstream_model": chat.served.upstream_model,
        "samples": samples,
        "answer": answer,
        "stopped": reason,
        "budget_tokens": context.ledger.budget.total_tokens,
        "cost": context.ledger.spent.cost,
        "calls": calls.calls,
    }


def progress_of(progress: Progress, event: Event) -> bool:
    """Fold `event` into `progress`; True when a call finished (worth telling the client)."""
    if isinstance(event, RequestFinished):
        progress.calls += 1
        progress.usage = progress.usage + event.usage
        return True
    return isinstance(event, UnitCompleted) and event.refused


def _candidates(outcome: StrategyOutcome) -> int:
    return sum(1 for sample in outcome.samples if not sample.tag.startswith("aux"))


def _chosen(outcome: StrategyOutcome) -> Completion | None:
    """The reply: the best-scored (else first) sample whose answer is the chosen one; else the
    first candidate; None when the budget allowed no sample at all."""
    candidates = [s for s in outcome.samples if not s.tag.startswith("aux")]
    if not candidates:
        return None
    key = answer_key(outcome.answer)
    matching = [s for s in candidates if key is not None and answer_key(s.answer) == key] or candidates
    best = max(matching, key=_score_order)
    return Completion(
        text=best.trace,
        finish_reason="length" if best.finish_reason == "length" else "stop",
        completion_tokens=best.completion_tokens,
    )


def _score_order(sample: Sample) -> float:
    return sample.score if sample.score is not None else 0.0
