"""Fixtures shared by the unit tests."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from budgetflow.testing import StubOpenAIServer


@pytest.fixture
def stub_url() -> Iterator[str]:
    """A stub server on its own event loop thread, answering 'Answer: 7' to everything."""
    ready = threading.Event()
    holder: dict[str, object] = {}

    def serve() -> None:
        loop = asyncio.new_event_loop()
        server = StubOpenAIServer(reply=lambda payload, index: "7 + 0 = 7. Answer: 7")
        loop.run_until_complete(server.start())
        holder.update(loop=loop, server=server)
        ready.set()
        loop.run_forever()
        loop.run_until_complete(server.stop())
        loop.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    ready.wait(10)
    server = holder["server"]
    assert isinstance(server, StubOpenAIServer)
    yield server.base_url
    loop = holder["loop"]
    assert isinstance(loop, asyncio.AbstractEventLoop)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
