"""Real components: the embedded SmolLM2 model, and llama.cpp's OpenAI-compatible server on 127.0.0.1."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from budgetflow.backends.embedded import default_model_path
from budgetflow.testing.llama_server import LlamaServer, start_llama_server, stop_llama_server


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """One event loop per test module, for backends that a module's tests share."""
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture(scope="session")
def model_path() -> Path:
    return default_model_path()


@pytest.fixture(scope="session")
def llama_server(model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    server = start_llama_server(model_path, tmp_path_factory.mktemp("llama") / "server.log")
    yield server
    stop_llama_server(server)
