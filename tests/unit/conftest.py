"""Fixtures shared by the unit tests."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator

import pytest

from budgetflow.testing import StubOpenAIServer


@pytest.fixture
def stub_url() -> Iterator[str]:
    """A stub server on its own event loop thread, answering 'Answer: 7' to everything."""
    with _serving("7 + 0 = 7. Answer: 7") as url:
        yield url


@pytest.fixture
def other_stub_url() -> Iterator[str]:
    """A second stub server, answering 'Answer: 9' to everything (a plan role's own endpoint)."""
    with _serving("Answer: 9") as url:
        yield url


@contextlib.contextmanager
def _serving(text: str) -> Iterator[str]:
    """A stub server replying `text`, on its own event loop thread while the block runs."""
    ready = threading.Event()
    holder: dict[str, object] = {}

    def serve() -> None:
        loop = asyncio.new_event_loop()
        server = StubOpenAIServer(reply=lambda payload, index: text)
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
    try:
        yield server.base_url
    finally:
        loop = holder["loop"]
        assert isinstance(loop, asyncio.AbstractEventLoop)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
