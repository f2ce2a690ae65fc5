"""Structured-concurrency helpers shared by the runner and the backends."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable
from typing import TypeVar

__all__ = ["first_finished", "first_leaf", "run_all"]

T = TypeVar("T")


def first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first exception inside a (possibly nested) group that is not a cancellation."""
    leaves: list[BaseException] = []
    stack: list[BaseException] = [group]
    while stack:
        current = stack.pop(0)
        if isinstance(current, BaseExceptionGroup):
            stack[:0] = list(current.exceptions)
        else:
            leaves.append(current)
    for leaf in leaves:
        if not isinstance(leaf, asyncio.CancelledError):
            return leaf
    return leaves[0]


async def run_all(awaitables: Iterable[Awaitable[T]]) -> list[T]:
    """Await all in one task group, results in order; the first failure cancels the rest and is
    raised as itself (not wrapped in an ExceptionGroup), so callers can catch typed errors."""

    async def wrap(awaitable: Awaitable[T]) -> T:
        return await awaitable

    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(wrap(a)) for a in awaitables]
    except BaseExceptionGroup as failures:
        raise first_leaf(failures) from None
    return [task.result() for task in tasks]


async def first_finished(awaitables: Iterable[Awaitable[T]], k: int) -> list[T]:
    """Run all at once; return the first `k` results in finishing order and cancel the rest.

    A failure before `k` results arrive cancels everything and is raised as itself."""
    results: list[T] = []
    enough = asyncio.Event()

    async def record(awaitable: Awaitable[T]) -> None:
        results.append(await awaitable)
        if len(results) >= k:
            enough.set()

    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(record(a)) for a in awaitables]
            await enough.wait()
            for task in tasks:
                task.cancel()
    except BaseExceptionGroup as failures:
        raise first_leaf(failures) from None
    return results[:k]
