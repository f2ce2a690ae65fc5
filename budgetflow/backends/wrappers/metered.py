"""`Metered`: counts, token totals and latencies per backend, and request events on the run's stream."""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from budgetflow.backends.base import Backend
from budgetflow.backends.wrappers.base import Wrapper
from budgetflow.errors import BackendError
from budgetflow.events import EventStream, RequestFailed, RequestFinished, RequestStarted
from budgetflow.types import Request, Response, Usage

__all__ = ["MeterReading", "Metered"]

T = TypeVar("T")


@dataclass(slots=True)
class MeterReading:
    requests: int = 0
    failures: int = 0
    usage: Usage = field(default_factory=Usage)
    latencies: list[float] = field(default_factory=list)

    @property
    def p50_seconds(self) -> float:
        return statistics.median(self.latencies) if self.latencies else 0.0


class Metered(Wrapper):
    """Measure every request; emit `RequestStarted` / `RequestFinished` / `RequestFailed`."""

    def __init__(self, inner: Backend, *, events: EventStream | None = None) -> None:
        super().__init__(inner)
        self.reading = MeterReading()
        self._events = events

    async def complete(self, request: Request) -> Response:
        response = await self._measured(request, request.n, "complete", lambda: self.inner.complete(request))
        self.reading.usage = self.reading.usage + response.usage
        return response

    async def score_continuations(self, request: Request, continuations: Sequence[str]) -> list[float]:
        """Scoring is a request too: counted, timed and on the event stream (kind "score")."""
        texts = list(continuations)
        call = lambda: self.inner.score_continuations(request, texts)  # noqa: E731
        return await self._measured(request, len(texts), "score", call)

    async def _measured(self, request: Request, n: int, kind: str, call: Callable[[], Awaitable[T]]) -> T:
        events = self._events if self._events is not None and self._events.active else None
        request_id = events.next_request_id() if events is not None else 0
        if events is not None:
            events.emit(
                RequestStarted(
                    request_id=request_id, backend=self.name, n=n, kind=kind, unit_id=request.unit_id
                )
            )
        started = time.perf_counter()
        self.reading.requests += 1
        try:
            result = await call()
        except BackendError as error:
            seconds = time.perf_counter() - started
            self.reading.failures += 1
            if events is not None:
                events.emit(
                    RequestFailed(
                        request_id=request_id,
                        backend=self.name,
                        error_type=type(error).__name__,
                        message=str(error)[:300],
                        retryable=error.retryable,
                        seconds=seconds,
                        unit_id=request.unit_id,
                    )
                )
            raise
        seconds = time.perf_counter() - started
        self.reading.latencies.append(seconds)
        if events is not None:
            usage = result.usage if isinstance(result, Response) else Usage()
            events.emit(
                RequestFinished(
                    request_id=request_id,
                    backend=self.name,
                    usage=usage,
                    seconds=seconds,
                    kind=kind,
                    unit_id=request.unit_id,
                )
            )
        return result
