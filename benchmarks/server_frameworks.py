"""Which HTTP server `budgetflow serve` should run on: the same thin proxy handler on each.

The handler is what every request of `budgetflow serve` pays for in the framework: read a JSON
body, send it upstream with one shared aiohttp client session, return the upstream's JSON. It
runs, each as its own process on 127.0.0.1 in front of the zero-latency stub, on

* aiohttp's server on uvloop (what `budgetflow serve` uses),
* Starlette under uvicorn (uvloop, httptools),
* Starlette under granian (Rust HTTP, ASGI interface),

and is loaded by one aiohttp client at concurrency 64 (throughput) and 1 (p50 latency), the
servers interleaved round by round. Needs the `bench` extra: pip install -e ".[bench]".

    python -m benchmarks.server_frameworks [--requests 3000] [--rounds 3]   (from the repository root)

Last stdout line: {"aiohttp_rps": …, "uvicorn_rps": …, "granian_rps": …, "aiohttp_p50_ms": …, …}
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import aiohttp

from budgetflow.testing.load import free_port, run_load

SERVERS = ("aiohttp", "uvicorn", "granian")
BODY = json.dumps(
    {"model": "stub", "messages": [{"role": "user", "content": "What is 6 x 7?"}], "max_tokens": 16}
)


def aiohttp_app(upstream: str) -> Any:
    from aiohttp import web

    async def handle(request: web.Request) -> web.Response:
        payload = await request.read()
        json.loads(payload)
        async with request.app["session"].post(f"{upstream}/chat/completions", data=payload) as reply:
            return web.Response(body=await reply.read(), content_type="application/json")

    async def session(app: web.Application) -> Any:
        app["session"] = aiohttp.ClientSession(headers={"Content-Type": "application/json"})
        yield
        await app["session"].close()

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handle)
    app.cleanup_ctx.append(session)
    return app


def starlette_app(upstream: str) -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    sessions: list[aiohttp.ClientSession] = []

    async def handle(request: Request) -> Response:
        payload = await request.body()
        json.loads(payload)
        if not sessions:
            sessions.append(aiohttp.ClientSession(headers={"Content-Type": "application/json"}))
        async with sessions[0].post(f"{upstream}/chat/completions", data=payload) as reply:
            return Response(await reply.read(), media_type="application/json")

    return Starlette(routes=[Route("/v1/chat/completions", handle, methods=["POST"])])


def serve(kind: str, upstream: str, port: int) -> None:
    """Run one server in this process (the benchmark starts one process per server)."""
    if kind == "aiohttp":
        import uvloop
        from aiohttp import web

        uvloop.install()
        web.run_app(aiohttp_app(upstream), host="127.0.0.1", port=port, access_log=None, print=None)
    elif kind == "uvicorn":
        import uvicorn

        uvicorn.run(
            starlette_app(upstream), host="127.0.0.1", port=port, log_level="warning", access_log=False
        )
    else:
        from granian import Granian
        from granian.constants import Interfaces

        Granian(
            "benchmarks.server_frameworks:granian_target",
            address="127.0.0.1",
            port=port,
            interface=Interfaces.ASGI,
            workers=1,
            log_enabled=False,
        ).serve()


def granian_target(scope: Any, receive: Any, send: Any) -> Any:
    import os

    global _GRANIAN_APP
    if _GRANIAN_APP is None:
        _GRANIAN_APP = starlette_app(os.environ["BENCH_UPSTREAM"])
    return _GRANIAN_APP(scope, receive, send)


_GRANIAN_APP: Any = None


@contextmanager
def started(command: list[str], env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[str]]:
    import os

    child = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, **(env or {})},
    )
    try:
        yield child
    finally:
        child.terminate()
        child.wait(timeout=30)


async def wait_up(url: str) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(200):
            try:
                async with session.post(
                    url, data=BODY, headers={"Content-Type": "application/json"}
                ) as reply:
                    if reply.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


async def load(
    session: aiohttp.ClientSession, url: str, total: int, concurrency: int
) -> tuple[float, list[float]]:
    async def call() -> None:
        async with session.post(url, data=BODY, headers={"Content-Type": "application/json"}) as reply:
            json.loads(await reply.read())

    return await run_load(call, total, concurrency)


async def measure(urls: dict[str, str], args: argparse.Namespace) -> dict[str, Any]:
    for url in urls.values():
        await wait_up(url)
    rates: dict[str, list[float]] = {name: [] for name in urls}
    latencies: dict[str, list[float]] = {name: [] for name in urls}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        for url in urls.values():
            await load(session, url, 300, 64)
        for round_index in range(args.rounds):
            for name, url in urls.items():
                rps, _ = await load(session, url, args.requests, 64)
                rates[name].append(rps)
                print(f"round {round_index} {name:>8} c=64: {rps:8.0f} req/s", flush=True)
            for name, url in urls.items():
                _, measured = await load(session, url, args.latency_requests, 1)
                latencies[name].extend(measured)
    return {
        "rps": {name: statistics.median(values) for name, values in rates.items()},
        "p50_ms": {name: statistics.median(values) * 1000 for name, values in latencies.items()},
    }


def main(args: argparse.Namespace) -> None:
    stub = subprocess.Popen(
        [sys.executable, "-m", "budgetflow.testing.stub_server"], stdout=subprocess.PIPE, text=True
    )
    assert stub.stdout is not None
    upstream = f"http://127.0.0.1:{int(stub.stdout.readline())}/v1"
    ports = {name: free_port() for name in SERVERS}
    script = [sys.executable, "-m", "benchmarks.server_frameworks", "--serve"]
    try:
        with (
            started([*script, "aiohttp", "--upstream", upstream, "--port", str(ports["aiohttp"])]),
            started([*script, "uvicorn", "--upstream", upstream, "--port", str(ports["uvicorn"])]),
            started(
                [*script, "granian", "--upstream", upstream, "--port", str(ports["granian"])],
                {"BENCH_UPSTREAM": upstream},
            ),
        ):
            urls = {name: f"http://127.0.0.1:{port}/v1/chat/completions" for name, port in ports.items()}
            result = asyncio.run(measure(urls, args))
    finally:
        stub.terminate()
        stub.wait(timeout=30)
    rps, p50 = result["rps"], result["p50_ms"]
    print("\n| server | req/s at c=64 (median) | p50 ms at c=1 |\n|---|---|---|")
    for name in SERVERS:
        print(f"| {name} | {rps[name]:.0f} | {p50[name]:.3f} |")
    summary = {f"{name}_rps": round(rps[name], 1) for name in SERVERS}
    summary |= {f"{name}_p50_ms": round(p50[name], 3) for name in SERVERS}
    print(json.dumps(summary))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--serve", choices=SERVERS, help=argparse.SUPPRESS)
    parser.add_argument("--upstream", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--latency-requests", type=int, default=500)
    parsed = parser.parse_args()
    if parsed.serve:
        serve(parsed.serve, parsed.upstream, parsed.port)
    else:
        main(parsed)
