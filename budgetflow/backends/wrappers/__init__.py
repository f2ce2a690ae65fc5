"""Cross-cutting concerns as wrappers around any backend (never flags inside one).

A typical stack, outermost first: `Retry(RateLimit(Budgeted(Metered(backend))))` — every retry
attempt is rate limited and reserved in the ledger, and every attempt is metered.
"""

from budgetflow.backends.wrappers.base import Wrapper
from budgetflow.backends.wrappers.budgeted import Budgeted, prompt_token_bound
from budgetflow.backends.wrappers.cache import Cache, request_key
from budgetflow.backends.wrappers.limits import ConcurrencyLimit, RateLimit, TokenBucket
from budgetflow.backends.wrappers.metered import Metered, MeterReading
from budgetflow.backends.wrappers.resilience import CircuitBreaker, Fallback
from budgetflow.backends.wrappers.retry import Retry

__all__ = [
    "Budgeted",
    "Cache",
    "CircuitBreaker",
    "ConcurrencyLimit",
    "Fallback",
    "MeterReading",
    "Metered",
    "RateLimit",
    "Retry",
    "TokenBucket",
    "Wrapper",
    "prompt_token_bound",
    "request_key",
]
