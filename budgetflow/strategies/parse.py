"""Strategy specs as users type them: `single`, `vote`, `vote@8`."""

from __future__ import annotations

from budgetflow.errors import ConfigError
from budgetflow.strategies.base import Strategy
from budgetflow.strategies.single import Single
from budgetflow.strategies.vote import Vote

__all__ = ["STRATEGY_NAMES", "parse_strategy"]

STRATEGY_NAMES = ("single", "vote")


def parse_strategy(spec: str, *, temperature: float | None = None) -> Strategy:
    """Build a strategy from `name` or `name@n` (e.g. `vote@8`)."""
    name, _, count = spec.strip().partition("@")
    if name == "single":
        if count:
            raise ConfigError(f"strategy 'single' takes no @n, got {spec!r}")
        return Single()
    if name == "vote":
        n = _parse_count(count, spec) if count else 8
        return Vote(n=n) if temperature is None else Vote(n=n, temperature=temperature)
    raise ConfigError(f"unknown strategy {spec!r}; known: {', '.join(STRATEGY_NAMES)} (e.g. vote@8)")


def _parse_count(text: str, spec: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(f"strategy {spec!r}: the part after @ must be a whole number") from None
    if value < 1:
        raise ConfigError(f"strategy {spec!r}: n must be >= 1")
    return value
