"""Typed events: one stream per run carries every request, retry, ledger movement and decision.

Subscribers (the progress display, tests, later the journal) are plain callables that receive
each event synchronously, in order. Emitting with no subscriber costs one attribute check.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from budgetflow.types import Spend, Usage

__all__ = [
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
    "StrategyDecided",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Base of every event; `at` is `time.monotonic()` when it happened."""

    at: float = field(default_factory=time.monotonic)


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestStarted(Event):
    request_id: int
    backend: str
    n: int
    attempt: int = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestFinished(Event):
    request_id: int
    backend: str
    usage: Usage
    seconds: float


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestFailed(Event):
    request_id: int
    backend: str
    error_type: str
    message: str
    retryable: bool
    seconds: float


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryScheduled(Event):
    request_id: int
    backend: str
    attempt: int
    delay: float
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class BudgetReserved(Event):
    ledger: str
    reservation_id: int
    amount: Spend


@dataclass(frozen=True, slots=True, kw_only=True)
class BudgetSettled(Event):
    ledger: str
    reservation_id: int
    reserved: Spend
    actual: Spend


@dataclass(frozen=True, slots=True, kw_only=True)
class BudgetReleased(Event):
    ledger: str
    reservation_id: int
    amount: Spend


@dataclass(frozen=True, slots=True, kw_only=True)
class BudgetDenied(Event):
    ledger: str
    limit_name: str
    limit: float
    needed: float


@dataclass(frozen=True, slots=True, kw_only=True)
class StrategyDecided(Event):
    question_id: str
    strategy: str
    action: str  # "draw" or "finish"
    n: int = 0
    answer: str | None = None
    reason: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class QuestionFinished(Event):
    question_id: str
    strategy: str
    answer: str | None
    score: float
    usage: Usage


Subscriber = Callable[[Event], None]


class EventStream:
    """Delivers each emitted event to every subscriber, in subscription order."""

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []
        self._request_ids = itertools.count(1)

    @property
    def active(self) -> bool:
        """Whether anyone listens; callers may skip building events when nobody does."""
        return bool(self._subscribers)

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Add a subscriber; returns a function that removes it."""
        self._subscribers.append(subscriber)
        return lambda: self._subscribers.remove(subscriber)

    def emit(self, event: Event) -> None:
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
