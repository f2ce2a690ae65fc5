"""Run `budgetflow serve`'s application on 127.0.0.1 inside a test or benchmark's event loop.

async with serving(backend, ServerSettings(upstream_model="stub")) as base_url:
    client = AsyncOpenAI(base_url=base_url, api_key="none")
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Iterator

from aiohttp import web

from budgetflow.backends.base import Backend
from budgetflow.server.app import ServerSettings, create_app
from budgetflow.server.keys import KeyStore
from budgetflow.testing.stub_server import StubOpenAIServer

__all__ = ["serving", "stub_in_thread"]


@contextlib.asynccontextmanager
async def serving(
    upstream: Backend, settings: ServerSettings | None = None, store: KeyStore | None = None
) -> AsyncIterator[str]:
    """The server's `/v1` base URL while the context is open (a free port, client disconnects
    cancelling their requests, as `budgetflow serve` runs it)."""
    runner = web.AppRunner(create_app(upstream, settings, store), handler_cancellation=True, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/v1"
    finally:
        await runner.cleanup()


@contextlib.contextmanager
def stub_in_thread(server: StubOpenAIServer) -> Iterator[StubOpenAIServer]:
    """`server` serving from its own event loop in a background thread while the context is open:
    for a test or benchmark whose client is another process (a `budgetflow` command)."""
    loop = asyncio.new_event_loop()
    started = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(server.start())
        started.set()
        loop.run_forever()
        loop.run_until_complete(server.stop())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    if not started.wait(30):
        raise RuntimeError("the stub server did not start within 30 s")
    try:
        yield server
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
