"""`budgetflow serve` under load, against the upstream alone and against OptiLLM's proxy.

Every server is a real process on 127.0.0.1: a zero-latency stub upstream
(`python -m budgetflow.testing.stub_server`), `budgetflow serve --upstream <stub>` and, when its
environment is there (`bash benchmarks/optillm_env.sh` builds it), OptiLLM's proxy with approach
`none` on the same stub. In one run, interleaved round by round:

* throughput at concurrency 64: the same chat request sent directly to the stub, through
  budgetflow with strategy `single`, and through OptiLLM (its rate is measured over fewer
  requests: it is two orders of magnitude slower);
* latency at concurrency 1: p50 per request direct and through budgetflow (p50 added), and time
  to the first content byte of a streamed `single` request through budgetflow;
* vote-8 and vote-5 through budgetflow vs OptiLLM's `self_consistency` (5 samples, fixed in its
  code) against a stub that takes 50 ms a request: wall time per request (budgetflow sends the
  samples at once, OptiLLM one after another);
* a mixed load: --mixed-requests requests over three keys (one ample, two tight budgets) and four
  strategies, checked for overspend, lost or duplicated responses and phantom refusals.

    python benchmarks/server_load.py [--requests 4000] [--rounds 3] [--mixed-requests 3000]

Last stdout line: {"budgetflow_rps": …, "direct_rps": …, "optillm_rps": …, "p50_added_ms": …,
"ttfb_ms": …, "vote8_ms": …, "vote5_ms": …, "optillm_sc5_ms": …, "mixed": {…}}
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp

from budgetflow.server.keys import KeyStore
from budgetflow.testing.load import free_port, run_load

ROOT = Path(__file__).resolve().parent
QUESTION = [{"role": "user", "content": "What is 6 x 7? Answer with a number."}]
Call = Callable[[], Awaitable[None]]


@contextmanager
def process(command: list[str], *, port_from: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """Start `command`; its base URL from the first line of stdout ("stdout": a bare port) or
    stderr ("stderr": a URL with a port); stop it on exit."""
    stream = subprocess.PIPE
    child = subprocess.Popen(
        command,
        stdout=stream if port_from == "stdout" else subprocess.DEVNULL,
        stderr=stream if port_from == "stderr" else subprocess.DEVNULL,
        text=True,
        env={**os.environ, **(env or {})},
    )
    try:
        pipe = child.stdout if port_from == "stdout" else child.stderr
        assert pipe is not None
        line = pipe.readline()
        match = re.fullmatch(r"(\d+)\s*", line) if port_from == "stdout" else re.search(r":(\d+)/v1", line)
        assert match, f"{command[2:4]} did not start: {line!r}"
        yield f"http://127.0.0.1:{match.group(1)}/v1"
    finally:
        child.terminate()
        child.wait(timeout=30)


def stub(delay: float = 0.0) -> Any:
    return process([sys.executable, "-m", "budgetflow.testing.stub_server", str(delay)], port_from="stdout")


def budgetflow_server(upstream: str, keys: Path | None = None) -> Any:
    command = [
        sys.executable,
        "-m",
        "budgetflow",
        "serve",
        "--upstream",
        upstream,
        "--model",
        "stub",
        "--port",
        "0",
    ]
    if keys is not None:
        command += ["--keys", str(keys)]
    return process(command, port_from="stderr")


@contextmanager
def optillm_server(python: str | None, upstream: str, approach: str) -> Iterator[str | None]:
    if python is None:
        yield None
        return
    port = free_port()
    script = str(Path(python).with_name("optillm"))
    command = [
        script,
        "--base-url",
        upstream,
        "--port",
        str(port),
        "--approach",
        approach,
        "--host",
        "127.0.0.1",
    ]
    child = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "OPENAI_API_KEY": "no_key"},
    )
    try:
        url = f"http://127.0.0.1:{port}/v1"
        asyncio.run(_wait_until_up(url, child))
        yield url
    finally:
        child.terminate()
        child.wait(timeout=30)


async def _wait_until_up(url: str, child: subprocess.Popen[bytes]) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(600):
            if child.poll() is not None:
                raise RuntimeError("OptiLLM exited while starting")
            try:
                async with session.post(
                    f"{url}/chat/completions", json={"model": "stub", "messages": QUESTION, "max_tokens": 4}
                ) as reply:
                    if reply.status < 500:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.5)
    raise RuntimeError("OptiLLM did not start within 300 s")


def chat(session: aiohttp.ClientSession, base_url: str, model: str, **extra: Any) -> Call:
    url = f"{base_url}/chat/completions"
    body = json.dumps({"model": model, "messages": QUESTION, "max_tokens": 16, "temperature": 0.7, **extra})
    headers = {"Content-Type": "application/json", "Authorization": "Bearer no_key"}

    async def call() -> None:
        async with session.post(url, data=body, headers=headers) as reply:
            payload = await reply.read()
            if reply.status != 200:
                raise RuntimeError(f"{base_url} {model}: HTTP {reply.status}: {payload[:200]!r}")
            json.loads(payload)

    return call


async def time_to_first_byte(session: aiohttp.ClientSession, base_url: str, samples: int) -> float:
    """Median seconds from sending a streamed `single` request to its first content chunk."""
    body = {"model": "stub", "messages": QUESTION, "max_tokens": 16, "stream": True}
    waits = []
    for _ in range(samples):
        started = time.perf_counter()
        async with session.post(f"{base_url}/chat/completions", json=body) as reply:
            async for line in reply.content:
                if line.startswith(b"data: {") and b'"content": "' in line and b'"content": ""' not in line:
                    waits.append(time.perf_counter() - started)
                    break
            await reply.read()
    return statistics.median(waits)


async def throughput(args: argparse.Namespace, targets: dict[str, str | None]) -> dict[str, Any]:
    results: dict[str, Any] = {}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        calls = {name: chat(session, url, "stub") for name, url in targets.items() if url is not None}
        for call in calls.values():
            await run_load(call, 100 if call is not calls.get("optillm") else 20, 64)
        rates: dict[str, list[float]] = {name: [] for name in calls}
        for round_index in range(args.rounds):
            for name, call in calls.items():
                total = args.requests if name != "optillm" else args.optillm_requests
                rps, _ = await run_load(call, total, 64)
                rates[name].append(rps)
                print(f"round {round_index} {name:>10} c=64: {rps:8.0f} req/s", flush=True)
        latencies: dict[str, list[float]] = {"direct": [], "budgetflow": []}
        for _ in range(args.rounds):
            for name in latencies:
                _, measured = await run_load(calls[name], args.latency_requests, 1)
                latencies[name].extend(measured)
        assert targets["budgetflow"] is not None
        results["ttfb_ms"] = await time_to_first_byte(session, targets["budgetflow"], 200) * 1000
    results["rps"] = {name: statistics.median(values) for name, values in rates.items()}
    results["p50_ms"] = {name: statistics.median(values) * 1000 for name, values in latencies.items()}
    return results


async def voting(budgetflow_url: str, optillm_url: str | None, requests: int) -> dict[str, float | None]:
    """Mean wall time per request of voting against the 50 ms stub: budgetflow's vote-8 and
    vote-5, and OptiLLM's self_consistency (its sample count is fixed at 5)."""
    out: dict[str, float | None] = {"vote8_ms": None, "vote5_ms": None, "optillm_sc5_ms": None}
    async with aiohttp.ClientSession() as session:
        for samples in (8, 5):
            _, ours = await run_load(chat(session, budgetflow_url, f"vote-{samples}/stub"), requests, 1)
            out[f"vote{samples}_ms"] = statistics.mean(ours) * 1000
        if optillm_url is not None:
            _, theirs = await run_load(chat(session, optillm_url, "self_consistency-stub"), requests, 1)
            out["optillm_sc5_ms"] = statistics.mean(theirs) * 1000
    return out


MIXED_MODELS = ("stub", "vote-4/stub", "early_stop-8/stub", "best_of_n-2/stub")


async def mixed(base_url: str, store_path: Path, secrets: dict[str, str], total: int) -> dict[str, Any]:
    """`total` requests over the keys and strategies at concurrency 64; every reply checked."""
    store = KeyStore(store_path)
    told: dict[str, int] = dict.fromkeys(secrets, 0)
    ids: list[str] = []
    statuses: dict[int, int] = {}
    phantom = 0

    async def one(index: int) -> None:
        nonlocal phantom
        name = list(secrets)[index % len(secrets)]
        body = {"model": MIXED_MODELS[index % len(MIXED_MODELS)], "messages": QUESTION, "max_tokens": 16}
        headers = {"Authorization": f"Bearer {secrets[name]}"}
        async with session.post(f"{base_url}/chat/completions", json=body, headers=headers) as reply:
            payload = await reply.json()
            statuses[reply.status] = statuses.get(reply.status, 0) + 1
        if reply.status == 200:
            ids.append(payload["id"])
            told[name] += payload["usage"]["total_tokens"]
        elif reply.status == 429 and "budget" in payload["error"]:
            budget = payload["error"]["budget"]
            room = budget["budget_tokens"] - budget["spent_tokens"] - budget["reserved_tokens"]
            phantom += room >= budget["needed_tokens"]

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as session:
        await asyncio.gather(*(one(i) for i in range(total)))
    keys = {name: store.authenticate(secret) for name, secret in secrets.items()}
    overspent = sum(
        1 for k in keys.values() if k and k.budget_tokens is not None and k.spent_tokens > k.budget_tokens
    )
    mismatched = sum(1 for name, k in keys.items() if k is None or k.spent_tokens != told[name])
    return {
        "requests": total,
        "answered": sum(statuses.values()),
        "statuses": statuses,
        "duplicated_ids": len(ids) - len(set(ids)),
        "overspent_keys": overspent,
        "spend_mismatches": mismatched,
        "phantom_refusals": phantom,
        "spent": {name: k.spent_tokens if k else None for name, k in keys.items()},
    }


def main(args: argparse.Namespace) -> None:
    optillm_python = _optillm_python(not args.no_optillm)
    with (
        stub() as upstream,
        budgetflow_server(upstream) as ours,
        optillm_server(optillm_python, upstream, "none") as theirs,
    ):
        measured = asyncio.run(throughput(args, {"direct": upstream, "budgetflow": ours, "optillm": theirs}))
    with (
        stub(0.05) as slow,
        budgetflow_server(slow) as ours,
        optillm_server(optillm_python, slow, "self_consistency") as theirs,
    ):
        voted = asyncio.run(voting(ours, theirs, args.vote_requests))
    with tempfile.TemporaryDirectory() as folder:
        store_path = Path(folder) / "keys.sqlite"
        store = KeyStore(store_path)
        secrets = {
            "ample": store.create("ample", budget_tokens=10**9),
            "tight": store.create("tight", budget_tokens=20_000, period_seconds=0),
            "tiny": store.create("tiny", budget_tokens=2_000, period_seconds=0),
        }
        with stub() as upstream, budgetflow_server(upstream, store_path) as ours:
            load = asyncio.run(mixed(ours, store_path, secrets, args.mixed_requests))
    rps, p50 = measured["rps"], measured["p50_ms"]
    optillm_rps = rps.get("optillm")
    print("\n| path | req/s at c=64 | p50 ms at c=1 |\n|---|---|---|")
    print(f"| direct to the stub | {rps['direct']:.0f} | {p50['direct']:.3f} |")
    print(f"| budgetflow serve, single | {rps['budgetflow']:.0f} | {p50['budgetflow']:.3f} |")
    print(f"| OptiLLM proxy, none | {optillm_rps or 0:.1f} | - |")
    ratio = rps["budgetflow"] / optillm_rps if optillm_rps else None
    print(
        f"budgetflow / OptiLLM: {ratio or 0:.0f}x; p50 added {p50['budgetflow'] - p50['direct']:.3f} ms; "
        f"time to first byte (streamed single) {measured['ttfb_ms']:.2f} ms"
    )
    print(
        f"against a 50 ms stub: vote-8 {voted['vote8_ms']:.0f} ms, vote-5 {voted['vote5_ms']:.0f} ms, "
        f"OptiLLM self_consistency (5 samples) {voted['optillm_sc5_ms'] or 0:.0f} ms per request"
    )
    print(f"mixed load: {json.dumps(load)}")
    print(
        json.dumps(
            {
                "budgetflow_rps": round(rps["budgetflow"], 1),
                "direct_rps": round(rps["direct"], 1),
                "optillm_rps": None if optillm_rps is None else round(optillm_rps, 2),
                "p50_added_ms": round(p50["budgetflow"] - p50["direct"], 3),
                "ttfb_ms": round(measured["ttfb_ms"], 3),
                "vote8_ms": round(voted["vote8_ms"] or 0, 1),
                "vote5_ms": round(voted["vote5_ms"] or 0, 1),
                "optillm_sc5_ms": None
                if voted["optillm_sc5_ms"] is None
                else round(voted["optillm_sc5_ms"], 1),
                "mixed": load,
            }
        )
    )


def _optillm_python(wanted: bool) -> str | None:
    python = ROOT / ".optillm-venv" / "bin" / "python"
    if not wanted:
        return None
    if (ROOT / ".optillm-venv" / "bin" / "optillm").exists():
        return str(python)
    print(
        "OptiLLM's environment is missing (bash benchmarks/optillm_env.sh builds it): skipping it", flush=True
    )
    return None


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--optillm-requests", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--latency-requests", type=int, default=500)
    parser.add_argument("--vote-requests", type=int, default=20)
    parser.add_argument("--mixed-requests", type=int, default=3000)
    parser.add_argument(
        "--no-optillm", action="store_true", help="Leave OptiLLM out even when it is installed."
    )
    main(parser.parse_args())
