"""What the benchmarks share to drive a server: a load loop and a free local port."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable

__all__ = ["free_port", "run_load"]


async def run_load(
    call: Callable[[], Awaitable[object]], total: int, concurrency: int
) -> tuple[float, list[float]]:
    """Requests per second over `total` calls with `concurrency` workers, and each call's latency."""
    latencies: list[float] = []
    remaining = iter(range(total))

    async def worker() -> None:
        for _ in remaining:
            started = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(worker())
    return total / (time.perf_counter() - started), latencies


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
