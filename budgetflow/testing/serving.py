"""Run `budgetflow serve`'s application on 127.0.0.1 inside a test or benchmark's event loop.

async with serving(backend, ServerSettings(upstream_model="stub")) as base_url:
    client = AsyncOpenAI(base_url=base_url, api_key="none")
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from budgetflow.backends.base import Backend
from budgetflow.server.app import ServerSettings, create_app
from budgetflow.server.keys import KeyStore

__all__ = ["serving"]


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
