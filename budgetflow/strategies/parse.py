"""Strategy specs as users type them: `single`, `vote@8`, `first_finish@8`, `early_stop@16`."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, replace
from typing import Any, Literal, cast

from budgetflow.errors import ConfigError
from budgetflow.strategies.base import Strategy
from budgetflow.strategies.best_of_n import BestOfN
from budgetflow.strategies.early_stop import EarlyStop
from budgetflow.strategies.first_finish import FirstFinish
from budgetflow.strategies.nothink import NoThink
from budgetflow.strategies.outline import Outline
from budgetflow.strategies.prune import Prune
from budgetflow.strategies.revision import Refine, Synthesize
from budgetflow.strategies.search import Beam
from budgetflow.strategies.single import Single
from budgetflow.strategies.verifiers import JudgeVerifier
from budgetflow.strategies.vote import Vote

__all__ = ["STRATEGY_NAMES", "StrategyOptions", "parse_strategy"]

STRATEGY_NAMES = (
    "single",
    "vote",
    "first_finish",
    "early_stop",
    "best_of_n",
    "refine",
    "synthesize",
    "outline",
    "beam",
    "prune",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class StrategyOptions:
    """Per-strategy options from the command line; `None` keeps each strategy's default."""

    temperature: float | None = None
    keep_first: int = 1
    stop_batch: int = 2
    stop_rule: Literal["beta", "margin"] = "beta"
    stop_confidence: float = 0.95
    stop_margin: int = 3


def parse_strategy(
    spec: str, *, temperature: float | None = None, options: StrategyOptions | None = None
) -> Strategy:
    """Build a strategy from `name` or `name@n` (e.g. `vote@8`); `nothink:<spec>` turns thinking off.

    `best_of_n` and `beam` score with an LLM judge on the same (budgeted) backend; pass a
    `Verifier` in Python for a function or a reward endpoint."""
    options = options or StrategyOptions()
    if spec.startswith("nothink:"):
        return NoThink(parse_strategy(spec.removeprefix("nothink:"), options=options))
    if temperature is not None:
        options = replace(options, temperature=temperature)
    name, _, count = spec.strip().partition("@")
    if name == "single":
        if count:
            raise ConfigError(f"strategy 'single' takes no @n, got {spec!r}")
        return Single()
    if name not in STRATEGY_NAMES:
        raise ConfigError(
            f"unknown strategy {spec!r}{_did_you_mean(name)}; known: {', '.join(STRATEGY_NAMES)}"
        )
    n = _parse_count(count, spec) if count else 8
    strategy = _build(name, n, bool(count), options)
    if options.temperature is not None and hasattr(strategy, "temperature"):
        strategy = replace(cast(Any, strategy), temperature=options.temperature)
    return strategy


def _did_you_mean(name: str) -> str:
    close = difflib.get_close_matches(name, STRATEGY_NAMES, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _build(name: str, n: int, counted: bool, options: StrategyOptions) -> Strategy:
    """The strategy `name` with count `n`; every name is matched explicitly (an unknown one is a
    `ConfigError`, never a silent default)."""
    if name == "vote":
        return Vote(n=n)
    if name == "first_finish":
        return FirstFinish(n=n, k=min(options.keep_first, n))
    if name == "best_of_n":
        return BestOfN(n=n, verifier=JudgeVerifier())
    if name == "refine":
        return Refine(rounds=n if counted else 2)
    if name == "synthesize":
        return Synthesize(n=n if counted else 4)
    if name == "outline":
        return Outline(n=n if counted else 4)
    if name == "beam":
        return Beam(width=n if counted else 2, scorer=JudgeVerifier())
    if name == "prune":
        return Prune(n=n)
    if name != "early_stop":
        raise ConfigError(
            f"unknown strategy {name!r}{_did_you_mean(name)}; known: {', '.join(STRATEGY_NAMES)}"
        )
    return EarlyStop(
        max_samples=n,
        batch=options.stop_batch,
        rule=options.stop_rule,
        confidence=options.stop_confidence,
        margin=options.stop_margin,
    )


def _parse_count(text: str, spec: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(f"strategy {spec!r}: the part after @ must be a whole number") from None
    if value < 1:
        raise ConfigError(f"strategy {spec!r}: n must be >= 1")
    return value
