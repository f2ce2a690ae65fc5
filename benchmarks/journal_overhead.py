"""What journaling costs on the hot path: the execution core with no journal, with a SQLite
journal, and with a PostgreSQL journal (a throwaway server on 127.0.0.1, when installed).

The same zero-model-time stub and client path as `benchmarks/overhead.py` (each request a unit of
its own, sent by `Unit.draw`); the journal's writer thread commits every step's request before
it is sent and its completion before `draw` returns. In one run, rotated over --rounds rounds:
throughput at concurrency 64 and p50 latency at concurrency 1 for each; ratios are per round,
against the no-journal run of the same round.

    python benchmarks/journal_overhead.py [--requests 3000] [--rounds 3]

Last stdout line: {"none_rps": …, "sqlite_rps": …, "postgres_rps": …, "sqlite_ratio": …,
"postgres_ratio": …, "none_p50_ms": …, "sqlite_p50_ms": …, "postgres_p50_ms": …}
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.overhead import engine_call, start_stub
from budgetflow.journal import Journal
from budgetflow.testing.load import run_load
from budgetflow.testing.postgres import PostgresServer, postgres_binaries


async def measure(base_url: str, target: str | None, requests: int) -> tuple[float, float]:
    """(requests/s at concurrency 64, p50 ms at concurrency 1) with a journal at `target`."""
    call, context, backend, _ = engine_call(base_url, keep=False)
    journal = Journal(target) if target else None
    if journal is not None:
        journal.attach(context.events)
    try:
        await run_load(call, 200, 64)
        rps, _ = await run_load(call, requests, 64)
        _, latencies = await run_load(call, max(100, requests // 10), 1)
    finally:
        if journal is not None:
            journal.close()
        await backend.aclose()
    return rps, statistics.median(latencies) * 1000


async def main(args: argparse.Namespace) -> None:
    process, base_url = start_stub()
    with contextlib.ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        postgres = stack.enter_context(PostgresServer()) if postgres_binaries() else None
        names = ["none", "sqlite"] + (["postgres"] if postgres else [])
        rates: dict[str, list[float]] = {name: [] for name in names}
        p50s: dict[str, list[float]] = {name: [] for name in names}
        try:
            for round_index in range(args.rounds):
                shift = round_index % len(names)
                for name in names[shift:] + names[:shift]:
                    target = {
                        "none": None,
                        "sqlite": str(folder / f"journal-{round_index}.sqlite"),
                        "postgres": postgres.new_database() if postgres else None,
                    }[name]
                    rps, p50 = await measure(base_url, target, args.requests)
                    rates[name].append(rps)
                    p50s[name].append(p50)
                    print(f"round {round_index} {name:>8}: {rps:7.0f} req/s at c=64, p50 {p50:.3f} ms at c=1")
        finally:
            process.kill()
            process.wait()
    ratio = {
        name: statistics.median(mine / plain for mine, plain in zip(rates[name], rates["none"], strict=True))
        for name in names
    }
    print("\n| journal | req/s at c=64 (median) | ratio to none | p50 ms at c=1 |\n|---|---|---|---|")
    for name in names:
        print(
            f"| {name} | {statistics.median(rates[name]):.0f} | {ratio[name]:.2f} | "
            f"{statistics.median(p50s[name]):.3f} |"
        )
    summary: dict[str, float | None] = {}
    for name in ("none", "sqlite", "postgres"):
        known = name in names
        summary[f"{name}_rps"] = round(statistics.median(rates[name]), 1) if known else None
        if name != "none":
            summary[f"{name}_ratio"] = round(ratio[name], 3) if known else None
        summary[f"{name}_p50_ms"] = round(statistics.median(p50s[name]), 3) if known else None
    print(json.dumps(summary))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    asyncio.run(main(parser.parse_args()))
