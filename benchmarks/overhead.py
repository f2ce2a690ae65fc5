"""Engine overhead on the hot path: budgetflow's HTTP stack vs a plain aiohttp client.

A zero-model-time OpenAI-compatible stub (aiohttp, its own process) serves 127.0.0.1. In one run:

* throughput at concurrency 64: the same N requests through budgetflow's execution core (one
  `RunContext`; each request is a unit of its own, sent by `Unit.draw` through
  Retry -> Budgeted(the unit's ledger, under the run's) -> RateLimit(no limit) -> ConcurrencyLimit
  -> Metered -> OpenAICompatibleBackend, the path `budgetflow eval` takes; every event, the
  journal-ready UnitRequested/UnitCompleted included, kept by an `EventLog` subscriber) and
  through a plain aiohttp client that also parses each JSON reply, and through the same core
  with no subscriber, in rotated order over --rounds rounds; the ratio is the median over rounds
  of each round's rate over plain aiohttp's (12 rounds: on 2 shared cores one round's ratio
  ranges over ±0.1 as the machine drifts, and a median of 5 still moved by ±0.06 run to run);
* latency at concurrency 1: p50 per request for both, interleaved;
* for reference, the official `openai` SDK alone (AsyncOpenAI, default httpx transport, retries off)
  at concurrency 64.

The process runs with the garbage collector's setting of budgetflow's own commands
(`budgetflow.runtime.collector.tune_garbage_collector`: first threshold 10,000), for every client
alike; `--default-gc` keeps CPython's default (700), under which the run that keeps every event
spends 30-45 µs per request in the collector (its retained events trigger a young collection
every ~64 requests, each walking every in-flight request's objects).

    python benchmarks/overhead.py [--requests 5000] [--rounds 12] [--latency-requests 1000] [--default-gc]

Last stdout line: {"engine_rps": …, "raw_rps": …, "ratio": …, "p50_added_ms": …, "quiet_rps": …,
"ratio_no_subscriber": …, "p50_added_ms_no_subscriber": …, "sdk_rps": …, "events_kept": …,
"gc_threshold": …}
(engine: every event kept by a subscriber; quiet: the same core with no subscriber)
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import json
import statistics
import subprocess
import sys
from collections.abc import Awaitable, Callable

import aiohttp

from budgetflow.backends.openai import OpenAICompatibleBackend
from budgetflow.budget import Budget
from budgetflow.events import EventLog
from budgetflow.runtime.collector import tune_garbage_collector
from budgetflow.runtime.context import EndpointLimits, RunContext
from budgetflow.testing.load import run_load
from budgetflow.types import Request, SamplingParams

PROMPT = "What is 6 x 7? Answer with a number."
Call = Callable[[], Awaitable[object]]


def start_stub() -> tuple[subprocess.Popen[bytes], str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "budgetflow.testing.stub_server"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert process.stdout is not None
    port = int(process.stdout.readline())
    return process, f"http://127.0.0.1:{port}/v1"


def engine_call(
    base_url: str, *, keep: bool = True
) -> tuple[Call, RunContext, OpenAICompatibleBackend, EventLog]:
    backend = OpenAICompatibleBackend(base_url=base_url, model="stub", api_key="sk-bench", timeout=30)
    context = RunContext(
        backend, budget=Budget(total_tokens=10**12), limits=EndpointLimits(concurrency=64), seed=1
    )
    kept = EventLog(context.events if keep else None)
    request = Request.from_prompt(PROMPT, sampling=SamplingParams(temperature=0, max_tokens=16))
    units = itertools.count()

    async def call() -> object:
        index = next(units)
        unit = context.unit(f"r{index}", index=index, kind="request")
        return await unit.draw(request)

    return call, context, backend, kept


def raw_call(session: aiohttp.ClientSession, base_url: str) -> Call:
    url = f"{base_url}/chat/completions"
    body = json.dumps(
        {
            "model": "stub",
            "messages": [{"role": "user", "content": PROMPT}],
            "temperature": 0,
            "top_p": 1.0,
            "max_tokens": 16,
            "seed": 1,
        }
    )

    async def call() -> object:
        async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as reply:
            return json.loads(await reply.text())

    return call


async def sdk_rps(base_url: str, total: int) -> float | None:
    try:
        from openai import AsyncOpenAI
    except ImportError:
        return None
    client = AsyncOpenAI(base_url=base_url, api_key="sk-bench", max_retries=0)

    async def call() -> object:
        return await client.chat.completions.create(
            model="stub", messages=[{"role": "user", "content": PROMPT}], temperature=0, max_tokens=16
        )

    rps, _ = await run_load(call, total, 64)
    await client.close()
    return rps


async def main(args: argparse.Namespace) -> None:
    process, base_url = start_stub()
    try:
        engine, context, backend, kept = engine_call(base_url)
        quiet, _, quiet_backend, silent = engine_call(base_url, keep=False)
        ledger = context.ledger
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            calls = {"engine": engine, "quiet": quiet, "raw": raw_call(session, base_url)}
            for call in calls.values():  # warm every path
                await run_load(call, 500, 64)
            rates: dict[str, list[float]] = {name: [] for name in calls}
            latencies: dict[str, list[float]] = {name: [] for name in calls}
            for round_index in range(args.rounds):
                for name in _rotated(list(calls), round_index):
                    rps, _ = await run_load(calls[name], args.requests, 64)
                    rates[name].append(rps)
                    print(f"round {round_index} {name:>6} c=64: {rps:8.0f} req/s")
            for round_index in range(args.rounds):
                for name in _rotated(list(calls), round_index):
                    _, measured = await run_load(calls[name], args.latency_requests, 1)
                    latencies[name].extend(measured)
        await backend.aclose()
        await quiet_backend.aclose()
        reference = await sdk_rps(base_url, args.sdk_requests)
    finally:
        process.kill()
        process.wait()
    median_rps = {name: statistics.median(values) for name, values in rates.items()}
    p50 = {name: statistics.median(values) * 1000 for name, values in latencies.items()}
    ratio = _round_ratio(rates, "engine")
    quiet_ratio = _round_ratio(rates, "quiet")
    assert ledger.reserved.calls == 0, "ledger unbalanced"
    assert not silent.events, "the quiet run had no subscriber"
    print(
        "\n| client | req/s at c=64 (median) | p50 ms at c=1 |\n|---|---|---|\n"
        f"| budgetflow core, every event kept | {median_rps['engine']:.0f} | {p50['engine']:.3f} |\n"
        f"| budgetflow core, no subscriber | {median_rps['quiet']:.0f} | {p50['quiet']:.3f} |\n"
        f"| plain aiohttp + json | {median_rps['raw']:.0f} | {p50['raw']:.3f} |\n"
        f"| openai SDK alone | {reference or 0:.0f} | - |\n"
        f"ratio {ratio:.2f} (no subscriber: {quiet_ratio:.2f}; medians over rounds of each round's "
        "ratio to plain aiohttp), "
        f"p50 added {p50['engine'] - p50['raw']:.3f} ms; the kept run's ledger spent "
        f"{ledger.spent.total_tokens:,} tokens over {ledger.spent.calls:,} calls, "
        f"{len(kept.events):,} events kept; collector threshold {gc.get_threshold()[0]:,}"
    )
    print(
        json.dumps(
            {
                "engine_rps": round(median_rps["engine"], 1),
                "raw_rps": round(median_rps["raw"], 1),
                "ratio": round(ratio, 3),
                "p50_added_ms": round(p50["engine"] - p50["raw"], 4),
                "quiet_rps": round(median_rps["quiet"], 1),
                "ratio_no_subscriber": round(quiet_ratio, 3),
                "p50_added_ms_no_subscriber": round(p50["quiet"] - p50["raw"], 4),
                "sdk_rps": round(reference, 1) if reference else None,
                "events_kept": len(kept.events),
                "gc_threshold": gc.get_threshold()[0],
            }
        )
    )


def _round_ratio(rates: dict[str, list[float]], name: str) -> float:
    """The median over rounds of `name`'s rate over plain aiohttp's in the same round: on a shared,
    noisy machine a ratio within one round drifts far less than either rate across rounds."""
    return statistics.median(mine / raw for mine, raw in zip(rates[name], rates["raw"], strict=True))


def _rotated(names: list[str], round_index: int) -> list[str]:
    """Each round starts with the next client: no client always runs first (or last)."""
    shift = round_index % len(names)
    return names[shift:] + names[:shift]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--latency-requests", type=int, default=1000)
    parser.add_argument("--sdk-requests", type=int, default=2000)
    parser.add_argument("--default-gc", action="store_true", help="keep CPython's collector thresholds")
    arguments = parser.parse_args()
    if not arguments.default_gc:
        tune_garbage_collector()
    asyncio.run(main(arguments))
