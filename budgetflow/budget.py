"""Budgets are data; the ledger enforces them.

A `Budget` is a small value object of limits (any subset). A `Ledger` holds one budget: before a
request is sent it **reserves** the request's worst case; after the reply it **settles** to the
actual usage and gives back the rest; a failed or cancelled request settles what was reported or
**releases** the reservation. Ledgers nest (`child`): a reservation must fit every ancestor, so a
question or node can never spend beyond its run.

Invariant: for every limit, spent + reserved <= limit at all times, as long as each reply's usage
is within what was reserved for it (a reply that reports more is still charged in full, so the
books stay true, and `overruns` counts it). All methods are synchronous and complete without
awaiting, so they are atomic on one event loop.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from budgetflow.errors import BudgetExceeded, ConfigError
from budgetflow.events import (
    BudgetDenied,
    BudgetReleased,
    BudgetReserved,
    BudgetSettled,
    EventStream,
)
from budgetflow.types import PICODOLLARS_PER_DOLLAR, Spend, Usage

__all__ = ["Budget", "Ledger", "Price", "Reservation"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Price:
    """Dollars per million tokens."""

    prompt_per_million: float
    completion_per_million: float

    def __post_init__(self) -> None:
        if self.prompt_per_million < 0 or self.completion_per_million < 0:
            raise ConfigError(f"prices must be >= 0, got {self}")

    def cost_pico(self, prompt_tokens: int, completion_tokens: int) -> int:
        """Exact cost in picodollars, rounded up per token class."""
        prompt_rate = round(self.prompt_per_million * 10**6)  # picodollars per token
        completion_rate = round(self.completion_per_million * 10**6)
        return prompt_tokens * prompt_rate + completion_tokens * completion_rate


_BUDGET_FIELDS = ("prompt_tokens", "completion_tokens", "total_tokens", "cost", "calls", "deadline_seconds")


@dataclass(frozen=True, slots=True, kw_only=True)
class Budget:
    """Limits; `None` means unlimited. `cost` is in dollars, `deadline_seconds` from ledger creation."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    cost: float | None = None
    calls: int | None = None
    deadline_seconds: float | None = None

    def __post_init__(self) -> None:
        values = (
            self.prompt_tokens,
            self.completion_tokens,
            self.total_tokens,
            self.cost,
            self.calls,
            self.deadline_seconds,
        )
        for name, value in zip(_BUDGET_FIELDS, values, strict=True):
            if value is not None and value < 0:
                raise ConfigError(f"Budget.{name} must be >= 0, got {value}")

    @property
    def cost_pico(self) -> int | None:
        return None if self.cost is None else math.floor(self.cost * PICODOLLARS_PER_DOLLAR)


@dataclass(slots=True)
class Reservation:
    """A held worst case; settle or release it exactly once."""

    id: int
    amount: Spend
    ledger: Ledger
    open: bool = True


_reservation_ids = itertools.count(1)


class Ledger:
    """Reserve, settle and release spend against a `Budget`, and against every ancestor's."""

    def __init__(
        self,
        budget: Budget | None = None,
        *,
        prices: Mapping[str, Price] | None = None,
        parent: Ledger | None = None,
        events: EventStream | None = None,
        name: str = "run",
        clock: Callable[[], float] = time.monotonic,
        unit_id: str = "",
    ) -> None:
        self.budget = budget or _UNLIMITED
        self.name = name
        #: The unit of work this ledger is the budget of (its events carry it); "" for a run's.
        self.unit_id: str = unit_id or (parent.unit_id if parent else "")
        self.parent = parent
        self.prices: Mapping[str, Price] = prices if prices is not None else (parent.prices if parent else {})
        self.events: EventStream | None = (
            events if events is not None else (parent.events if parent else None)
        )
        self._spent = _Tally()
        self._reserved = _Tally()
        self.overruns = 0
        self._clock = clock
        self._started = clock()
        self._limits = _limits_of(self.budget) if self.budget is not _UNLIMITED else {}
        # ancestors only: a tuple holding `self` would make every ledger a reference cycle, freed
        # by the garbage collector instead of at once (one per unit: most of a run's GC work)
        self._ancestors: tuple[Ledger, ...] = parent._chain() if parent else ()
        #: Whether this ledger or an ancestor has a deadline (most have none: no clock to read).
        self.has_deadline: bool = self.budget.deadline_seconds is not None or (
            parent is not None and parent.has_deadline
        )
        self._priced: bool = self.budget.cost is not None or (parent is not None and parent._needs_prices())

    # ---- queries ---------------------------------------------------------------------------

    @property
    def spent(self) -> Spend:
        """Everything settled here (and in this ledger's children)."""
        return self._spent.snapshot()

    def settled_usage(self) -> Usage:
        """The tokens settled here (and in this ledger's children), without the rest of `spent`."""
        return Usage(self._spent.prompt_tokens, self._spent.completion_tokens)

    @property
    def reserved(self) -> Spend:
        """Worst cases held here (and in this ledger's children) for requests in flight."""
        return self._reserved.snapshot()

    def child(self, budget: Budget | None = None, *, name: str = "child", unit_id: str = "") -> Ledger:
        """A nested ledger: its reservations must also fit this ledger (and its ancestors).
        `unit_id` names the unit whose budget it is (default: this ledger's)."""
        return Ledger(budget, parent=self, name=f"{self.name}/{name}", clock=self._clock, unit_id=unit_id)

    def cost_pico(self, model: str, prompt_tokens: int, completion_tokens: int) -> int:
        price = self.prices.get(model)
        if price is None:
            if self._needs_prices():
                raise ConfigError(f"no price for model {model!r}: a cost limit cannot be kept without one")
            return 0
        return price.cost_pico(prompt_tokens, completion_tokens)

    def worst_case(self, *, model: str, prompt_tokens: int, max_tokens: int, n: int) -> Spend:
        """What a request may cost at most: its prompt once plus `n` x `max_tokens`, and one call."""
        completion = max_tokens * n
        return Spend(prompt_tokens, completion, self.cost_pico(model, prompt_tokens, completion), 1)

    def actual(self, *, model: str, usage: Usage) -> Spend:
        cost = self.cost_pico(model, usage.prompt_tokens, usage.completion_tokens)
        return Spend(usage.prompt_tokens, usage.completion_tokens, cost, 1)

    def remaining_seconds(self) -> float | None:
        """Seconds until the nearest deadline of this ledger or its ancestors (None: no deadline)."""
        if not self.has_deadline:
            return None
        own = None
        if self.budget.deadline_seconds is not None:
            own = self.budget.deadline_seconds - (self._clock() - self._started)
        above = self.parent.remaining_seconds() if self.parent else None
        candidates = [value for value in (own, above) if value is not None]
        return min(candidates) if candidates else None

    def headroom(self, limit_name: str) -> float | None:
        """How much of one limit is neither spent nor reserved here (None: unlimited)."""
        limit = self._limits.get(limit_name)
        if limit is None:
            return None
        return limit - _measure(self._spent, limit_name) - _measure(self._reserved, limit_name)

    def available(self, limit_name: str) -> float | None:
        """What this ledger could still reserve of one limit: the smallest headroom along its
        chain of ancestors (None: no ledger of the chain limits it)."""
        found = [h for h in (ledger.headroom(limit_name) for ledger in self._chain()) if h is not None]
        return min(found) if found else None

    def extend_tokens(self, tokens: int) -> None:
        """Raise this ledger's token limit by `tokens` (a plan handing budget that a finished node
        left unused to the nodes still running). Its ancestors' limits still hold."""
        if tokens <= 0 or "total_tokens" not in self._limits:
            return
        self.budget = replace(self.budget, total_tokens=(self.budget.total_tokens or 0) + tokens)
        self._limits["total_tokens"] += tokens

    # ---- movements -------------------------------------------------------------------------

    def reserve(self, amount: Spend) -> Reservation:
        """Hold `amount` in this ledger and every ancestor, or raise `BudgetExceeded` and hold nothing."""
        chain = self._chain()
        for ledger in chain:
            ledger._check(amount)
        for ledger in chain:
            ledger._reserved.add(amount)
        reservation = Reservation(next(_reservation_ids), amount, self)
        if self.events is not None and self.events.active:
            self.events.emit(
                BudgetReserved(
                    unit_id=self.unit_id, ledger=self.name, reservation_id=reservation.id, amount=amount
                )
            )
        return reservation

    def settle(self, reservation: Reservation, actual: Spend) -> None:
        """Replace the held worst case by what was actually spent."""
        self._close(reservation)
        over = _exceeds(actual, reservation.amount)
        held = reservation.amount
        for ledger in self._chain():
            ledger._reserved.subtract(held)
            ledger._spent.add(actual)
            ledger.overruns += over
        if self.events is not None and self.events.active:
            self.events.emit(
                BudgetSettled(
                    unit_id=self.unit_id,
                    ledger=self.name,
                    reservation_id=reservation.id,
                    reserved=reservation.amount,
                    actual=actual,
                )
            )

    def charge(self, actual: Spend) -> None:
        """Count spend that was reserved and paid before this ledger existed (a call replayed
        from a journal on resume): it is not checked against the limits again, and it is on the
        event stream as a settlement of reservation 0."""
        for ledger in self._chain():
            ledger._spent.add(actual)
        if self.events is not None and self.events.active:
            self.events.emit(
                BudgetSettled(
                    unit_id=self.unit_id, ledger=self.name, reservation_id=0, reserved=actual, actual=actual
                )
            )

    def release(self, reservation: Reservation) -> None:
        """Give back a reservation that spent nothing."""
        self._close(reservation)
        for ledger in self._chain():
            ledger._reserved.subtract(reservation.amount)
        if self.events is not None and self.events.active:
            self.events.emit(
                BudgetReleased(
                    unit_id=self.unit_id,
                    ledger=self.name,
                    reservation_id=reservation.id,
                    amount=reservation.amount,
                )
            )

    # ---- internals -------------------------------------------------------------------------

    def _chain(self) -> tuple[Ledger, ...]:
        """This ledger and its ancestors, nearest first."""
        return (self, *self._ancestors)

    def _close(self, reservation: Reservation) -> None:
        if reservation.ledger is not self:
            raise ConfigError("a reservation must be settled or released on the ledger that made it")
        if not reservation.open:
            raise ConfigError(f"reservation {reservation.id} was already settled or released")
        reservation.open = False

    def _needs_prices(self) -> bool:
        return self._priced

    def _check(self, amount: Spend) -> None:
        if not self._limits and not self.has_deadline:
            return
        deadline = self.budget.deadline_seconds
        if deadline is not None and self._clock() - self._started >= deadline:
            self._deny("deadline_seconds", deadline, self._clock() - self._started)
        if not self._limits:
            return
        for name, limit in self._limits.items():
            needed = _measure(self._spent, name) + _measure(self._reserved, name) + _measure(amount, name)
            if needed > limit:
                self._deny(name, limit, needed)

    def _deny(self, name: str, limit: float, needed: float) -> None:
        if self.events is not None and self.events.active:
            self.events.emit(
                BudgetDenied(
                    unit_id=self.unit_id, ledger=self.name, limit_name=name, limit=limit, needed=needed
                )
            )
        spent = _measure(self._spent, name) if name != "deadline_seconds" else needed
        unit = "s" if name == "deadline_seconds" else ""
        if name == "cost":
            limit, needed, spent = (v / PICODOLLARS_PER_DOLLAR for v in (limit, needed, spent))
        raise BudgetExceeded(
            f"budget {self.name!r}: {name} limit {limit:g}{unit} would be exceeded "
            f"(spent {spent:g}, spent + reserved + this request = {needed:g})",
            limit_name=name,
            limit=limit,
            needed=needed,
        )


class _Tally:
    """A ledger's running totals, kept as plain integers: the hot path adds and subtracts in
    place instead of building a `Spend` per movement; `snapshot` gives the value."""

    __slots__ = ("calls", "completion_tokens", "cost_pico", "prompt_tokens")

    def __init__(self) -> None:
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.cost_pico = 0
        self.calls = 0

    def add(self, amount: Spend) -> None:
        self.prompt_tokens += amount.prompt_tokens
        self.completion_tokens += amount.completion_tokens
        self.cost_pico += amount.cost_pico
        self.calls += amount.calls

    def subtract(self, amount: Spend) -> None:
        self.prompt_tokens -= amount.prompt_tokens
        self.completion_tokens -= amount.completion_tokens
        self.cost_pico -= amount.cost_pico
        self.calls -= amount.calls

    def snapshot(self) -> Spend:
        return Spend(self.prompt_tokens, self.completion_tokens, self.cost_pico, self.calls)


def _exceeds(actual: Spend, reserved: Spend) -> bool:
    """Whether `actual` is over `reserved` on any measure (an overrun: the reservation was short)."""
    return (
        actual.prompt_tokens > reserved.prompt_tokens
        or actual.completion_tokens > reserved.completion_tokens
        or actual.total_tokens > reserved.total_tokens
        or actual.cost_pico > reserved.cost_pico
        or actual.calls > reserved.calls
    )


def _measure(spend: Spend | _Tally, name: str) -> int:
    """One limit's measure of a spend or a ledger's running totals (the same four counters)."""
    if name == "total_tokens":
        return spend.prompt_tokens + spend.completion_tokens
    if name == "cost":
        return spend.cost_pico
    return int(getattr(spend, name))


#: The shared budget of every ledger without limits of its own (a unit's, often).
_UNLIMITED = Budget()


def _limits_of(budget: Budget) -> dict[str, int]:
    limits = {
        "prompt_tokens": budget.prompt_tokens,
        "completion_tokens": budget.completion_tokens,
        "total_tokens": budget.total_tokens,
        "cost": budget.cost_pico,
        "calls": budget.calls,
    }
    return {name: int(value) for name, value in limits.items() if value is not None}
