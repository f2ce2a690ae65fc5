"""`Metered`: counts, token totals and latencies per backend, and request events on the run's stream."""

from __future__ import annotations

import collections
import statistics
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Final

from budgetflow.backends.base import Backend, ScoredContinuations, StreamTail
from budgetflow.backends.wrappers.base import Wrapper
from budgetflow.errors import BackendError
from budgetflow.events import EventStream, RequestFailed, RequestFinished, RequestStarted
from budgetflow.types import Request, Response
from budgetflow.usage import NO_USAGE, Usage

__all__ = ["LATENCY_WINDOW", "MeterReading", "Metered"]


#: How many of the latest requests' latencies a meter keeps (a server meters millions of requests:
#: a list of every latency would grow without end).
LATENCY_WINDOW: Final = 1024


@dataclass(slots=True)
class MeterReading:
    requests: int = 0
    failures: int = 0
    usage: Usage = field(default_factory=Usage)
    #: The latest `LATENCY_WINDOW` requests' latencies, oldest first.
    latencies: collections.deque[float] = field(
        default_factory=lambda: collections.deque(maxlen=LATENCY_WINDOW)
    )

    @property
    def p50_seconds(self) -> float:
        """The median latency of the latest `LATENCY_WINDOW` requests (0 before any)."""
        return statistics.median(self.latencies) if self.latencies else 0.0


class Metered(Wrapper):
    """Measure every request; emit `RequestStarted` / `RequestFinished` / `RequestFailed`."""

    def __init__(self, inner: Backend, *, events: EventStream | None = None) -> None:
        super().__init__(inner)
        self.reading = MeterReading()
        self._events = events

    async def complete(self, request: Request) -> Response:
        started = self._begin(request, request.n, "complete")
        try:
            response = await self.inner.complete(request)
        except BackendError as error:
            self._failed(request, started, error)
            raise
        self.reading.usage = self.reading.usage + response.usage
        self._finished(request, started, response.usage, "complete")
        return response

    async def score_continuations(self, request: Request, continuations: Sequence[str]) -> list[float]:
        """Scoring is a request too: counted, timed and on the event stream (kind "score"), with the
        usage the endpoint reported for it when it did (`ScoredContinuations`)."""
        texts = list(continuations)
        started = self._begin(request, len(texts), "score")
        try:
            scores = await self.inner.score_continuations(request, texts)
        except BackendError as error:
            self._failed(request, started, error)
            raise
        usage = scores.usage if isinstance(scores, ScoredContinuations) else NO_USAGE
        self.reading.usage = self.reading.usage + usage
        self._finished(request, started, usage, "score")
        return scores

    async def stream(self, request: Request) -> AsyncIterator[str]:
        """A stream is a request too (kind "stream"), with the usage its `StreamTail` reported."""
        started = self._begin(request, 1, "stream")
        usage = NO_USAGE
        try:
            async for delta in self.inner.stream(request):
                if isinstance(delta, StreamTail):
                    usage = delta.usage
                yield delta
        except BackendError as error:
            self._failed(request, started, error)
            raise
        self.reading.usage = self.reading.usage + usage
        self._finished(request, started, usage, "stream")

    def _begin(self, request: Request, n: int, kind: str) -> tuple[int, float]:
        """Count the request, emit `RequestStarted`; its id and start time."""
        self.reading.requests += 1
        request_id = 0
        if self._events is not None and self._events.active:
            request_id = self._events.next_request_id()
            self._events.emit(
                RequestStarted(
                    request_id=request_id,
                    backend=self.name,
                    n=n,
                    kind=kind,
                    unit_id=request.unit_id,
                    model=request.model or self.inner.model_name,
                )
            )
        return request_id, time.perf_counter()

    def _finished(self, request: Request, started: tuple[int, float], usage: Usage, kind: str) -> None:
        request_id, at = started
        seconds = time.perf_counter() - at
        self.reading.latencies.append(seconds)
        if self._events is not None and self._events.active:
            self._events.emit(
                RequestFinished(
                    request_id=request_id,
                    backend=self.name,
                    usage=usage,
                    seconds=seconds,
                    kind=kind,
                    unit_id=request.unit_id,
                )
            )

    def _failed(self, request: Request, started: tuple[int, float], error: BackendError) -> None:
        request_id, at = started
        self.reading.failures += 1
        if self._events is not None and self._events.active:
            self._events.emit(
                RequestFailed(
                    request_id=request_id,
                    backend=self.name,
                    error_type=type(error).__name__,
                    message=str(error)[:300],
                    retryable=error.retryable,
                    seconds=time.perf_counter() - at,
                    unit_id=request.unit_id,
                )
            )
