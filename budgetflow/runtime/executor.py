"""The run context: one ledger, one event stream, and the wrapped backend every question shares.

The shared stack (one per real endpoint) is `RateLimit(ConcurrencyLimit(Metered(backend)))`, so
limits hold across all questions and nested calls. Each question then gets
`Retry(Budgeted(shared, question_ledger))`: every attempt is reserved in the question's ledger,
which is a child of the run's, so neither the question's nor the run's budget can be exceeded.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from budgetflow.backends.base import Backend
from budgetflow.backends.wrappers import Budgeted, ConcurrencyLimit, Metered, RateLimit, Retry
from budgetflow.budget import Budget, Ledger, Price
from budgetflow.errors import ConfigError
from budgetflow.runtime.events import EventStream

__all__ = ["EndpointLimits", "RetryPolicy", "RunContext"]


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    max_attempts: int = 4
    base_delay: float = 0.5
    max_delay: float = 30.0
    max_total_seconds: float = 120.0


@dataclass(frozen=True, slots=True, kw_only=True)
class EndpointLimits:
    """What one endpoint tolerates: requests in flight, per-minute rates, and how to retry."""

    concurrency: int = 64
    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ConfigError(f"backend concurrency must be >= 1, got {self.concurrency}")
        for name in ("requests_per_minute", "tokens_per_minute"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(f"{name} must be > 0, got {value}")


class RunContext:
    """Everything one run shares, passed explicitly (no globals)."""

    def __init__(
        self,
        backend: Backend,
        *,
        budget: Budget | None = None,
        question_budget: Budget | None = None,
        prices: dict[str, Price] | None = None,
        limits: EndpointLimits | None = None,
        events: EventStream | None = None,
        ledger: Ledger | None = None,
    ) -> None:
        """`ledger` shares an existing run's ledger (several backends under one budget); `budget`
        and `prices` then belong to that ledger and must not be given."""
        if ledger is not None and (budget is not None or prices is not None):
            raise ConfigError("give a RunContext either a ledger or a budget and prices, not both")
        self.events = events or EventStream()
        self.ledger = ledger or Ledger(budget, prices=prices, events=self.events, name="run")
        self.question_budget = question_budget
        self.limits = limits or EndpointLimits()
        self.metered = Metered(backend, events=self.events)
        self.concurrency = ConcurrencyLimit(self.metered, limit=self.limits.concurrency)
        self.shared: Backend = RateLimit(
            self.concurrency,
            requests_per_minute=self.limits.requests_per_minute,
            tokens_per_minute=self.limits.tokens_per_minute,
        )

    def backend_for(self, name: str) -> Backend:
        """The backend one question (or node) uses: retried, and charged to its own child ledger."""
        ledger = self.ledger.child(self.question_budget, name=name)
        policy = self.limits.retry
        return Retry(
            Budgeted(self.shared, ledger),
            max_attempts=policy.max_attempts,
            base_delay=policy.base_delay,
            max_delay=policy.max_delay,
            max_total_seconds=policy.max_total_seconds,
            events=self.events,
        )
