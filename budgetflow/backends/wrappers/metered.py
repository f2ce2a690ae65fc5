"""`Metered`: counts, token totals and latencies per backend, and request events on the run's stream."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field

from budgetflow.backends.base import Backend
from budgetflow.backends.wrappers.base import Wrapper
from budgetflow.errors import BackendError
from budgetflow.runtime.events import EventStream, RequestFailed, RequestFinished, RequestStarted
from budgetflow.types import Request, Response, Usage

__all__ = ["MeterReading", "Metered"]


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
        events = self._events if self._events is not None and self._events.active else None
        request_id = events.next_request_id() if events is not None else 0
        if events is not None:
            events.emit(RequestStarted(request_id=request_id, backend=self.name, n=request.n))
        started = time.perf_counter()
        self.reading.requests += 1
        try:
            response = await self.inner.complete(request)
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
                    )
                )
            raise
        seconds = time.perf_counter() - started
        self.reading.usage = self.reading.usage + response.usage
        self.reading.latencies.append(seconds)
        if events is not None:
            events.emit(
                RequestFinished(
                    request_id=request_id, backend=self.name, usage=response.usage, seconds=seconds
                )
            )
        return response
