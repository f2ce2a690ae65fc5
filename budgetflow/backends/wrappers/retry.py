"""`Retry`: exponential backoff with full jitter, honouring `Retry-After`, for retryable failures only."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from budgetflow.backends.base import Backend
from budgetflow.backends.wrappers.base import Wrapper
from budgetflow.errors import BackendError, ConfigError, RateLimited
from budgetflow.events import EventStream, RetryScheduled
from budgetflow.types import Request, Response

__all__ = ["Retry"]

T = TypeVar("T")


#: Jitter for retries not given their own generator: shared, so a wrapper costs no seeding.
_JITTER = random.Random()


class Retry(Wrapper):
    """Retry connection errors, timeouts, malformed replies, 408/409/429 and 5xx.

    Attempt k (from 1) waits a uniformly random time in [0, min(max_delay, base_delay x 2^(k-1))]
    ("full jitter"), or exactly what `Retry-After` asked for when the server said so. Gives up
    after `max_attempts` attempts or when the next wait would pass `max_total_seconds`, raising the
    last error. Put it *outside* `Budgeted` so that every attempt is reserved and settled.
    """

    def __init__(
        self,
        inner: Backend,
        *,
        max_attempts: int = 4,
        base_delay: float = 0.5,
        max_delay: float = 30.0,
        max_total_seconds: float = 120.0,
        events: EventStream | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(inner)
        if max_attempts < 1:
            raise ConfigError(f"max_attempts must be >= 1, got {max_attempts}")
        if base_delay < 0 or max_delay < 0 or max_total_seconds < 0:
            raise ConfigError("retry delays must be >= 0")
        self.max_attempts = max_attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.max_total_seconds = max_total_seconds
        self._events = events
        self._sleep = sleep
        self._rng = rng or _JITTER
        self._clock = clock

    async def complete(self, request: Request) -> Response:
        started = self._clock()
        try:  # the first attempt without the retry loop's machinery: most requests succeed
            return await self.inner.complete(request)
        except BackendError as error:
            failure = error
        return await self._retrying(lambda: self.inner.complete(request), failure, started)

    async def score_continuations(self, request: Request, continuations: Sequence[str]) -> list[float]:
        started = self._clock()
        try:
            return await self.inner.score_continuations(request, continuations)
        except BackendError as error:
            failure = error
        return await self._retrying(
            lambda: self.inner.score_continuations(request, continuations), failure, started
        )

    async def _retrying(
        self, attempt_once: Callable[[], Awaitable[T]], failure: BackendError, started: float
    ) -> T:
        """Attempts 2 .. `max_attempts` after the first one failed with `failure`."""
        request_id = 0
        for attempt in range(1, self.max_attempts + 1):
            if not failure.retryable or attempt == self.max_attempts:
                raise failure
            delay = self.delay_for(attempt, failure)
            if self._clock() - started + delay > self.max_total_seconds:
                raise failure
            if self._events is not None and self._events.active:
                request_id = request_id or self._events.next_request_id()
                self._events.emit(
                    RetryScheduled(
                        request_id=request_id,
                        backend=self.name,
                        attempt=attempt + 1,
                        delay=delay,
                        reason=type(failure).__name__,
                    )
                )
            await self._sleep(delay)
            try:
                return await attempt_once()
            except BackendError as error:
                failure = error
        raise AssertionError("unreachable")  # pragma: no cover

    def delay_for(self, attempt: int, error: BackendError) -> float:
        """Seconds to wait before attempt `attempt + 1`."""
        if isinstance(error, RateLimited) and error.retry_after is not None:
            return min(error.retry_after, self.max_total_seconds)
        ceiling = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        return self._rng.uniform(0, ceiling)
