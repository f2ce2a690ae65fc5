"""The unit scheduler: every unit of a run under one task group, `concurrency` at a time.

With `pace=True` the run budget is paced across the units: each unit, as it starts, gets an
equal share of what is neither spent nor reserved among the units not yet started (uniform
shares; what a unit leaves unspent flows to later ones), so the first units cannot spend what the
last ones need. `check_fits` refuses, before anything is sent, a run budget that cannot pay one
minimal request per unit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from budgetflow.backends.wrappers.budgeted import request_prompt_bound
from budgetflow.concurrency import run_all
from budgetflow.errors import ConfigError
from budgetflow.runtime.context import RunContext, Unit
from budgetflow.types import Request

__all__ = ["check_fits", "run_units"]

T = TypeVar("T")
R = TypeVar("R")


async def run_units(
    context: RunContext,
    items: Sequence[T],
    run_one: Callable[[T, Unit], Awaitable[R]],
    *,
    unit_id: Callable[[T], str],
    kind: str,
    concurrency: int,
    pace: bool = True,
) -> list[R]:
    """`run_one(item, unit)` for every item, in one task group, results in item order. The first
    failure that is not a budget refusal cancels the rest (their requests too) and propagates."""
    if concurrency < 1:
        raise ConfigError(f"concurrency must be >= 1, got {concurrency}")
    limiter = asyncio.Semaphore(concurrency)
    started = 0

    async def one(index: int, item: T) -> R:
        nonlocal started
        async with limiter:
            share = context.fair_share(len(items) - started) if pace else None
            started += 1
            unit = context.unit(unit_id(item), index=index, kind=kind, budget=share)
            return await run_one(item, unit)

    return await run_all(one(i, item) for i, item in enumerate(items))


async def check_fits(context: RunContext, requests: Sequence[Request]) -> None:
    """Raise `ConfigError` naming the numbers when the run budget cannot pay each unit's
    minimal request (`requests`, one per unit: its prompt and one sample's `max_tokens`)."""
    limit = context.ledger.budget.total_tokens
    if limit is None or not requests:
        return
    backend = context.endpoints[0]
    needed = 0
    for request in requests:
        try:
            prompt = await backend.count_prompt_tokens(request)
        except NotImplementedError:
            prompt = request_prompt_bound(request)
        needed += prompt + request.sampling.max_tokens
    if needed > limit:
        raise ConfigError(
            f"a run budget of {limit:,} tokens cannot pay one minimal request for each of the "
            f"{len(requests)} units: that needs {needed:,} tokens (prompt + max_tokens each, "
            f"{needed // len(requests):,} on average); raise the budget or lower max_tokens"
        )
