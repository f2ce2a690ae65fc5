"""`RateLimit` (requests and weighted tokens per minute) and `ConcurrencyLimit` (requests in flight).

Both are shared by everyone who holds the same wrapper instance, so one instance per real
endpoint enforces the endpoint's limits across all questions and nodes of a run. Neither holds
anything while a caller is waiting on something else, so nested calls cannot deadlock them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence

from budgetflow.backends.base import Backend
from budgetflow.backends.wrappers.base import Wrapper
from budgetflow.backends.wrappers.budgeted import prompt_token_bound, request_prompt_bound
from budgetflow.backends.wrappers.dispatch import mark_sent, mark_waiting
from budgetflow.errors import ConfigError
from budgetflow.types import Request, Response

__all__ = ["ConcurrencyLimit", "RateLimit", "TokenBucket"]


class TokenBucket:
    """Refills at `rate` units per second up to `capacity`; `acquire(k)` waits until k are there.

    Waiters are served first come, first served: a large request is not starved by small ones.
    """

    def __init__(self, *, rate: float, capacity: float, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or capacity <= 0:
            raise ConfigError(f"a token bucket needs rate > 0 and capacity > 0, got {rate}, {capacity}")
        self.rate = rate
        self.capacity = capacity
        self._clock = clock
        self._level = capacity
        self._updated = clock()
        self._turn = asyncio.Lock()

    def _refill(self) -> None:
        now = self._clock()
        self._level = min(self.capacity, self._level + (now - self._updated) * self.rate)
        self._updated = now

    async def acquire(self, amount: float) -> None:
        amount = min(amount, self.capacity)  # a request larger than the bucket waits for a full one
        async with self._turn:
            self._refill()
            while self._level < amount:
                await asyncio.sleep((amount - self._level) / self.rate)
                self._refill()
            self._level -= amount


class RateLimit(Wrapper):
    """At most `requests_per_minute` requests and `tokens_per_minute` tokens (worst case of each
    request: prompt bound + max_tokens x n) per minute, with bursts up to one minute's worth."""

    def __init__(
        self,
        inner: Backend,
        *,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(inner)
        self._requests = (
            TokenBucket(rate=requests_per_minute / 60, capacity=requests_per_minute, clock=clock)
            if requests_per_minute
            else None
        )
        self._tokens = (
            TokenBucket(rate=tokens_per_minute / 60, capacity=tokens_per_minute, clock=clock)
            if tokens_per_minute
            else None
        )

    async def complete(self, request: Request) -> Response:
        mark_waiting()
        if self._tokens is not None:
            await self._admit(request_prompt_bound(request) + request.sampling.max_tokens * request.n)
        elif self._requests is not None:
            await self._admit(0)
        mark_sent()
        return await self.inner.complete(request)

    async def score_continuations(self, request: Request, continuations: Sequence[str]) -> list[float]:
        if self._tokens is not None:
            texts = sum(prompt_token_bound((), prefill=text) for text in continuations)
            await self._admit(request_prompt_bound(request) + texts)
        elif self._requests is not None:
            await self._admit(0)
        return await self.inner.score_continuations(request, continuations)

    async def stream(self, request: Request) -> AsyncIterator[str]:
        if self._tokens is not None:
            await self._admit(request_prompt_bound(request) + request.sampling.max_tokens)
        elif self._requests is not None:
            await self._admit(0)
        async for delta in self.inner.stream(request):
            yield delta

    async def _admit(self, weight: int) -> None:
        """Wait for one request's turn and `weight` worst-case tokens."""
        if self._requests is not None:
            await self._requests.acquire(1)
        if self._tokens is not None:
            await self._tokens.acquire(weight)


class ConcurrencyLimit(Wrapper):
    """At most `limit` requests in flight on the wrapped backend."""

    def __init__(self, inner: Backend, *, limit: int) -> None:
        super().__init__(inner)
        if limit < 1:
            raise ConfigError(f"concurrency limit must be >= 1, got {limit}")
        self.limit = limit
        self._slots = asyncio.Semaphore(limit)
        self.in_flight = 0
        self.peak_in_flight = 0

    async def complete(self, request: Request) -> Response:
        mark_waiting()
        await self._slots.acquire()
        mark_sent()
        self._entered()
        try:
            return await self.inner.complete(request)
        finally:
            self._leave()

    async def score_continuations(self, request: Request, continuations: Sequence[str]) -> list[float]:
        await self._slots.acquire()
        self._entered()
        try:
            return await self.inner.score_continuations(request, continuations)
        finally:
            self._leave()

    async def stream(self, request: Request) -> AsyncIterator[str]:
        """A stream holds its slot until it ends or its reader stops."""
        await self._slots.acquire()
        self._entered()
        try:
            async for delta in self.inner.stream(request):
                yield delta
        finally:
            self._leave()

    def _entered(self) -> None:
        self.in_flight += 1
        if self.in_flight > self.peak_in_flight:
            self.peak_in_flight = self.in_flight

    def _leave(self) -> None:
        self.in_flight -= 1
        self._slots.release()
