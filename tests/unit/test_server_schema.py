"""schemathesis against the served OpenAPI schema: generated requests (valid and invalid) to every
operation, with the stub as upstream; no 5xx, and every reply matches the schema's status codes,
content types, headers and bodies.

One check is left out: `positive_data_acceptance` (a schema-valid body must be accepted). The
server validates more than a JSON schema can say — strategy names, the models the upstream
serves, the request's budget — and refuses those with a documented 400/404/429."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from budgetflow.backends.openai import OpenAICompatibleBackend
from budgetflow.server.app import ServerSettings
from budgetflow.server.openapi import openapi_schema
from budgetflow.testing.serving import serving
from budgetflow.testing.stub_server import StubOpenAIServer

schema = schemathesis.openapi.from_dict(openapi_schema())
CASES: dict[str, int] = {}


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    """The server and its stub upstream on a loop of their own, in a background thread."""
    ready: list[str] = []
    started = threading.Event()
    loops: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    async def main() -> None:
        stop = asyncio.Event()
        loops.append((asyncio.get_running_loop(), stop))
        async with StubOpenAIServer(reply=lambda payload, index: "Answer: 4", keep_payloads=False) as stub:
            backend = OpenAICompatibleBackend(base_url=stub.base_url, model="stub", api_key="none")
            settings_ = ServerSettings(upstream_model="stub", max_tokens_cap=64, default_max_tokens=8)
            async with serving(backend, settings_) as url:
                ready.append(url.removesuffix("/v1"))
                started.set()
                await stop.wait()

    thread = threading.Thread(target=lambda: asyncio.run(main()), daemon=True)
    thread.start()
    assert started.wait(timeout=30)
    yield ready[0]
    print(f"\nschemathesis cases per operation: {CASES} ({sum(CASES.values())} in all)")
    loop, stop = loops[0]
    loop.call_soon_threadsafe(stop.set)
    thread.join(timeout=30)


@schema.parametrize()
@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_the_served_schema_holds(case: schemathesis.Case, base_url: str) -> None:
    CASES[case.operation.label] = CASES.get(case.operation.label, 0) + 1
    response = case.call_and_validate(base_url=base_url, excluded_checks=[positive_data_acceptance])
    assert response.status_code < 500
