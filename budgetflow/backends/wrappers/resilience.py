"""`Fallback` (try the next backend on failure) and `CircuitBreaker` (stop sending to a backend
that keeps failing, probe it again later)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from budgetflow.backends.base import Backend
from budgetflow.backends.wrappers.base import Wrapper
from budgetflow.errors import BackendError, CircuitOpen, ConfigError
from budgetflow.types import Request, Response

__all__ = ["CircuitBreaker", "Fallback"]


class Fallback(Backend):
    """Ask each backend in turn; the first that answers wins. Raises the last failure if all fail."""

    def __init__(self, backends: Sequence[Backend]) -> None:
        if not backends:
            raise ConfigError("Fallback needs at least one backend")
        self.backends = list(backends)
        self.name = "fallback(" + ",".join(b.name for b in self.backends) + ")"

    async def complete(self, request: Request) -> Response:
        last: BackendError | None = None
        for backend in self.backends:
            try:
                return await backend.complete(request)
            except BackendError as error:
                last = error
        assert last is not None
        raise last

    async def aclose(self) -> None:
        for backend in self.backends:
            await backend.aclose()


class CircuitBreaker(Wrapper):
    """Open after `failure_threshold` consecutive failures; after `reset_seconds` let one probe
    through (half-open): success closes the circuit, failure opens it again."""

    def __init__(
        self,
        inner: Backend,
        *,
        failure_threshold: int = 5,
        reset_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(inner)
        if failure_threshold < 1:
            raise ConfigError(f"failure_threshold must be >= 1, got {failure_threshold}")
        self.failure_threshold = failure_threshold
        self.reset_seconds = reset_seconds
        self._clock = clock
        self.consecutive_failures = 0
        self._opened_at: float | None = None
        self._probing = False

    @property
    def state(self) -> str:
        if self._opened_at is None:
            return "closed"
        if self._clock() - self._opened_at >= self.reset_seconds:
            return "half-open"
        return "open"

    async def complete(self, request: Request) -> Response:
        state = self.state
        if state == "open" or (state == "half-open" and self._probing):
            raise CircuitOpen(
                f"{self.name}: circuit open after {self.consecutive_failures} consecutive failures",
                backend=self.name,
            )
        self._probing = state == "half-open"
        try:
            response = await self.inner.complete(request)
        except BackendError:
            self.consecutive_failures += 1
            if self._probing or self.consecutive_failures >= self.failure_threshold:
                self._opened_at = self._clock()
            raise
        finally:
            self._probing = False
        self.consecutive_failures = 0
        self._opened_at = None
        return response
