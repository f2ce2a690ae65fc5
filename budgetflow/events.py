"""Typed events: one stream per run carries every request, retry, ledger movement and decision.

Every event carries the run's id (stamped by the stream) and, where one is involved, the unit of
work's id. Unit events carry what a journal needs to replay a run: `UnitRequested` what was asked
(messages, sampling, n, rollout indices and seeds, prefill), `UnitCompleted` what came back
(texts, finish reasons, usage, logprobs). Subscribers (the progress display, tests, a journal)
are plain callables that receive each event synchronously, in order; `AsyncSink` puts a bounded
queue and a consumer task between the loop and a slow subscriber (a database writer). Emitting
with no subscriber costs one attribute check.

Events are records, read-only by convention: every subscriber sees the same object, so none may
change it. They are plain slotted dataclasses rather than frozen ones because several are built
per request on the hot path, and a frozen dataclass costs about three times as much to build.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from budgetflow.types import Completion, JsonFields, Message, SamplingParams, Spend
from budgetflow.usage import NO_USAGE, Usage

__all__ = [
    "AllocatorDecided",
    "AsyncSink",
    "BudgetDenied",
    "BudgetReleased",
    "BudgetReserved",
    "BudgetSettled",
    "Event",
    "EventLog",
    "EventStream",
    "QuestionFinished",
    "RequestFailed",
    "RequestFinished",
    "RequestStarted",
    "RetryScheduled",
    "RunStarted",
    "StrategyDecided",
    "ToolCalled",
    "UnitCompleted",
    "UnitFinished",
    "UnitRequested",
    "UnitStarted",
]


@dataclass(slots=True, kw_only=True)
class Event:
    """Base of every event; `at` is `time.monotonic()` when it happened; `run_id` is stamped by
    the stream it is emitted on; `unit_id` names the unit of work ("" for run-level events)."""

    at: float = field(default_factory=time.monotonic)
    run_id: str = ""
    unit_id: str = ""


@dataclass(slots=True, kw_only=True)
class RunStarted(Event):
    """A run (a strategy or an allocator at one budget over a dataset) begins: what it is and
    the budget it runs under (what a trace page draws the spend curve against)."""

    name: str
    questions: int
    budget_tokens: int | None = None
    budget_samples: int | None = None


@dataclass(slots=True, kw_only=True)
class RequestStarted(Event):
    """A request reached the endpoint's stack (`kind` "complete" or "score")."""

    request_id: int
    backend: str
    n: int
    attempt: int = 1
    kind: str = "complete"
    model: str = ""


@dataclass(slots=True, kw_only=True)
class RequestFinished(Event):
    request_id: int
    backend: str
    usage: Usage
    seconds: float
    kind: str = "complete"


@dataclass(slots=True, kw_only=True)
class UnitStarted(Event):
    """A unit of work (a question under a strategy, an allocator's question, a plan node) began."""

    kind: str
    budget_tokens: int | None = None


@dataclass(slots=True, kw_only=True)
class UnitRequested(Event):
    """What a unit asked for: rollouts `first_rollout .. first_rollout + n - 1`, with seeds
    `first_seed .. first_seed + n - 1` (`seeds`; all None when unseeded)."""

    step: int
    messages: tuple[Message, ...]
    sampling: SamplingParams
    n: int
    first_rollout: int
    first_seed: int | None
    prefill: str = ""
    keep_first: int | None = None
    kind: str = "complete"

    @property
    def seeds(self) -> tuple[int | None, ...]:
        """Each rollout's seed (sample j of a request runs with its first seed + j)."""
        if self.first_seed is None:
            return (None,) * self.n
        return tuple(range(self.first_seed, self.first_seed + self.n))


@dataclass(slots=True, kw_only=True)
class UnitCompleted(Event):
    """What came back for one `UnitRequested` step (scores for a scoring step): the completions
    themselves, read through `texts`, `finish_reasons`, `logprobs`, `tokens` and `fields`. It holds
    the reply's own tuple, so building one per request allocates nothing else."""

    step: int
    completions: tuple[Completion, ...] = ()
    usage: Usage
    unreported: Usage = NO_USAGE
    scores: tuple[float, ...] = ()
    refused: bool = False

    @property
    def texts(self) -> tuple[str, ...]:
        return tuple([c.text for c in self.completions])

    @property
    def finish_reasons(self) -> tuple[str, ...]:
        return tuple([c.finish_reason for c in self.completions])

    @property
    def logprobs(self) -> tuple[float | None, ...]:
        return tuple([c.mean_logprob for c in self.completions])

    @property
    def tokens(self) -> tuple[int, ...]:
        """Each completion's generated tokens."""
        return tuple([c.completion_tokens for c in self.completions])

    @property
    def fields(self) -> tuple[JsonFields, ...]:
        """Each completion's verbatim reply fields (tool calls, …)."""
        return tuple([c.fields for c in self.completions])


@dataclass(slots=True, kw_only=True)
class UnitFinished(Event):
    """A unit ended: its answer, why, and everything its ledger settled."""

    answer: str | None
    reason: str
    spent: Spend
    starved: bool = False


@dataclass(slots=True, kw_only=True)
class RequestFailed(Event):
    request_id: int
    backend: str
    error_type: str
    message: str
    retryable: bool
    seconds: float


@dataclass(slots=True, kw_only=True)
class RetryScheduled(Event):
    request_id: int
    backend: str
    attempt: int
    delay: float
    reason: str


@dataclass(slots=True, kw_only=True)
class BudgetReserved(Event):
    ledger: str
    reservation_id: int
    amount: Spend


@dataclass(slots=True, kw_only=True)
class BudgetSettled(Event):
    ledger: str
    reservation_id: int
    reserved: Spend
    actual: Spend


@dataclass(slots=True, kw_only=True)
class BudgetReleased(Event):
    ledger: str
    reservation_id: int
    amount: Spend


@dataclass(slots=True, kw_only=True)
class BudgetDenied(Event):
    ledger: str
    limit_name: str
    limit: float
    needed: float


@dataclass(slots=True, kw_only=True)
class StrategyDecided(Event):
    question_id: str
    strategy: str
    action: str  # "draw" or "finish"
    n: int = 0
    answer: str | None = None
    reason: str = ""


@dataclass(slots=True, kw_only=True)
class AllocatorDecided(Event):
    """An allocator gave a question (`unit_id`) `n` more samples — or, with action "stop" and no
    unit, stopped spending — and why."""

    allocator: str
    action: str  # "draw" or "stop"
    n: int = 0
    priority: float | None = None
    samples_left: int = 0
    reason: str = ""


@dataclass(slots=True, kw_only=True)
class ToolCalled(Event):
    """An agent unit called a tool (or was refused one: its tool-call budget was spent)."""

    tool: str
    arguments: str
    result: str
    refused: bool = False
    calls_left: int = 0


@dataclass(slots=True, kw_only=True)
class QuestionFinished(Event):
    question_id: str
    strategy: str
    answer: str | None
    score: float
    usage: Usage


Subscriber = Callable[[Event], None]


class EventStream:
    """Delivers each emitted event to every subscriber, in subscription order, stamped with
    `run_id` (a fresh one unless given)."""

    def __init__(self, run_id: str | None = None) -> None:
        self._subscribers: list[Subscriber] = []
        self._request_ids = itertools.count(1)
        self.run_id = run_id or uuid.uuid4().hex[:12]
        #: Whether anyone listens; callers may skip building events when nobody does (a plain
        #: attribute, not a property: it is read several times per request).
        self.active = False
        #: What units wait for before sending a step and before acting on its reply (a journal's
        #: commit); empty for most streams, and then nothing is awaited.
        self.barriers: list[Callable[[], Awaitable[None]]] = []

    def add_barrier(self, barrier: Callable[[], Awaitable[None]]) -> None:
        """Have units wait for `barrier` (a journal's "everything so far is committed") after
        announcing a step, before sending it, and after its completion, before acting on it."""
        self.barriers.append(barrier)

    async def durable(self) -> None:
        """Wait for every barrier: what was emitted so far is as durable as the subscribers make it."""
        for barrier in self.barriers:
            await barrier()

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Add a subscriber; returns a function that removes it."""
        self._subscribers.append(subscriber)
        self.active = True

        def unsubscribe() -> None:
            self._subscribers.remove(subscriber)
            self.active = bool(self._subscribers)

        return unsubscribe

    def emit(self, event: Event) -> None:
        if not self._subscribers:
            return
        if not event.run_id:
            event.run_id = self.run_id
        for subscriber in self._subscribers:
            subscriber(event)

    def next_request_id(self) -> int:
        return next(self._request_ids)


class EventLog:
    """A subscriber that keeps every event (for tests and small runs)."""

    def __init__(self, stream: EventStream | None = None) -> None:
        self.events: list[Event] = []
        if stream is not None:
            stream.subscribe(self)

    def __call__(self, event: Event) -> None:
        self.events.append(event)

    def of_type(self, kind: type[Event]) -> list[Event]:
        return [e for e in self.events if isinstance(e, kind)]


class AsyncSink:
    """A subscriber that hands events to an async consumer through a bounded queue, so a slow
    writer (a journal) never blocks the event loop's emitters.

    Run the consumer inside the run: `async with sink.running(): ...`; leaving the block drains
    every queued event before it returns. When the queue is full, events wait in an overflow
    buffer (never dropped; `overflowed` counts them) and the consumer takes them in order.
    """

    def __init__(self, consume: Callable[[Event], Awaitable[None]], *, maxsize: int = 1024) -> None:
        self._consume = consume
        self._queue: asyncio.Queue[Event] = asyncio.Queue(maxsize)
        self._overflow: collections.deque[Event] = collections.deque()
        self.overflowed = 0

    def __call__(self, event: Event) -> None:
        self.overflowed += not self._put(event)

    def _put(self, event: Event) -> bool:
        """Queue `event` (True), or keep it in the overflow buffer, in order (False)."""
        if not self._overflow:
            try:
                self._queue.put_nowait(event)
                return True
            except asyncio.QueueFull:
                pass
        self._overflow.append(event)
        return False

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[AsyncSink]:
        async with asyncio.TaskGroup() as group:
            group.create_task(self._drain())
            try:
                yield self
            finally:
                self._finish()

    def _finish(self) -> None:
        self._put(_END)

    async def _drain(self) -> None:
        while True:
            event = await self._next()
            if event is _END:
                return
            await self._consume(event)

    async def _next(self) -> Event:
        if not self._queue.empty():
            return self._queue.get_nowait()
        if self._overflow:
            return self._overflow.popleft()
        return await self._queue.get()


_END = Event()
