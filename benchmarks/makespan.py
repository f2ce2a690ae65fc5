"""Makespan of the dataflow scheduler on random DAGs, against the lower bound and LangGraph.

Random DAGs of 200, 1,000 and 10,000 nodes (random depth and layer widths; each node waits for
1-3 nodes of earlier layers) run through `budgetflow.plans.run_plan` on a latency-only fake
backend (`LatencyBackend`): a node's call sleeps its own log-normal latency (median --median-ms,
sigma --sigma) and answers. Everything the engine adds is on: one `RunContext` with a token budget (every call
reserved and settled in the ledger tree, each node a unit with its share), the event stream with
a subscriber keeping every event, strategies run by the execution core.

With --lengths-sigma S > 0 the nodes differ in what they may decode, as a real plan's do: each
declares log-normal max_tokens (median 128, sigma S) and its latency is scaled by it, the
--sigma factor standing for what the declaration does not tell. The shape table then has a
`max tokens` row (our rule) beside `node count`.

* makespan / lower bound (`ours/bd`), where the bound is max(critical path, total work /
  concurrency): no scheduler with --concurrency calls in flight can do better;
* what a scheduler could reach on the same DAG (benchmarks/makespan_sim.py, zero overhead): the
  list schedule by our own rule, the longest path in declared max_tokens (in nodes when every
  node declares the same, as by default), `rule/bd`, and by a clairvoyant rule that knows every
  call's latency (`clair/bd`). Neither always reaches the bound: it is loosest when
  the critical path and the work per slot are close. `--shapes N` tabulates both over N random
  DAGs per size;
* what running adds to the rule: `ours/obs`, our makespan over the bound of the durations the
  calls really took (asyncio timers wake up to a millisecond late), and `ours/rule`, our makespan
  over the rule's zero-overhead schedule of those durations (dispatch delays, the engine's cost);
* µs per node: the same DAGs with zero latency (the scheduler's and the engine's own cost; the
  median of --repeats runs, interleaved with the references below), the scheduler's share of it
  (`sched µs`: µs per node minus the core's µs per unit), and
  for reference the execution core alone (`core µs`: as many one-sample units, no plan);
* for reference, a bare asyncio start-when-ready loop (no budget, ledger or events) on the same
  DAGs and latencies, starting ready nodes in the order they became ready (`bare/bd`); and its
  µs per node with zero latency (`bare µs`), the floor of any asyncio scheduler on this machine;
* with --langgraph: the same DAGs and latencies through LangGraph's StateGraph (a node per DAG
  node, `add_edge([sources], node)` so it waits for all of them, `max_concurrency`), run in the
  benchmark's own virtual environment (benchmarks/.langgraph-venv, made on first use; LangGraph
  is not a dependency of budgetflow).

The process runs with the collector setting of budgetflow's own commands (first threshold 10,000,
`budgetflow.runtime.collector`); `--default-gc` keeps CPython's.

    python benchmarks/makespan.py [--sizes 200 1000 10000] [--concurrency 16] [--repeats 5]
                                   [--shapes 30] [--lengths-sigma 0] [--langgraph] [--default-gc]

Last stdout line: {"makespan_over_bound": worst over sizes, "langgraph_over_bound": …,
"us_per_node": worst over sizes, "langgraph_us_per_node": …, the other columns' worst,
"sizes": {...}, "shapes": {...}}
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import random
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.makespan_sim import (
    duration_priority,
    expected_path_priority,
    list_schedule,
    node_count_priority,
)
from budgetflow.backends.base import Backend
from budgetflow.budget import Budget
from budgetflow.events import Event, EventStream
from budgetflow.plans import Plan, plan_from_dict, run_plan
from budgetflow.runtime.collector import tune_garbage_collector
from budgetflow.runtime.context import RunContext
from budgetflow.runtime.strategy_runner import run_strategy
from budgetflow.strategies.parse import parse_strategy
from budgetflow.types import Completion, Message, Request, Response, SamplingParams, Usage

HERE = Path(__file__).resolve().parent
LANGGRAPH_VENV = HERE / ".langgraph-venv"


@dataclass(frozen=True)
class Dag:
    """Node i waits for `sources[i]`; its call takes `latency[i]` seconds. `max_tokens[i]`: the
    node's declared limit, when nodes differ in what they may decode (None: all alike)."""

    sources: list[list[int]]
    latency: list[float]
    max_tokens: list[int] | None = None

    def bound(self, concurrency: int) -> tuple[float, float]:
        """(critical path, total work / concurrency) in seconds."""
        finish = [0.0] * len(self.sources)
        for node, before in enumerate(self.sources):  # nodes are in topological order
            finish[node] = self.latency[node] + max((finish[s] for s in before), default=0.0)
        return max(finish), sum(self.latency) / concurrency


#: The median declared max_tokens of nodes whose lengths differ (`--lengths-sigma`).
MEDIAN_MAX_TOKENS = 128


def random_dag(
    size: int, rng: random.Random, median_ms: float, sigma: float, lengths_sigma: float = 0.0
) -> Dag:
    """A random DAG with log-normal latencies (median `median_ms`, sigma `sigma`). With
    `lengths_sigma` > 0 nodes also declare log-normal max_tokens (median `MEDIAN_MAX_TOKENS`) and
    each latency is scaled by its node's max_tokens / median: a call's time grows with what it
    may decode, and the first log-normal factor is what the declaration does not tell (how much
    of it the reply uses, the endpoint's speed)."""
    depth = rng.randint(max(2, int(math.sqrt(size) / 4)), max(3, int(math.sqrt(size) * 2)))
    cuts = sorted(rng.sample(range(1, size), depth - 1))
    widths = [b - a for a, b in zip([0, *cuts], [*cuts, size], strict=True)]
    sources: list[list[int]] = []
    first = 0  # first node of the current layer
    for layer, width in enumerate(widths):
        for _ in range(width):
            if layer == 0:
                sources.append([])
            else:
                earlier = range(0, first)
                count = min(len(earlier), rng.randint(1, 3))
                picks = {rng.randrange(max(0, first - widths[layer - 1]), first)}  # one from the layer above
                picks.update(rng.sample(earlier, count - 1))
                sources.append(sorted(picks))
        first += width
    median = median_ms / 1000
    latency = [median * math.exp(rng.gauss(0.0, sigma)) for _ in range(size)]
    if lengths_sigma <= 0:
        return Dag(sources, latency)
    draws = [math.exp(rng.gauss(0.0, lengths_sigma)) for _ in range(size)]
    lengths = [max(8, round(MEDIAN_MAX_TOKENS * draw)) for draw in draws]
    scaled = [seconds * length / MEDIAN_MAX_TOKENS for seconds, length in zip(latency, lengths, strict=True)]
    return Dag(sources, scaled, lengths)


def rule_priority(dag: Dag) -> list[float]:
    """The scheduler's own rule: the longest remaining path in declared max_tokens (in nodes when
    every node declares the same)."""
    if dag.max_tokens is None:
        return node_count_priority(dag.sources)
    return duration_priority(dag.sources, [float(length) for length in dag.max_tokens])


def as_plan(dag: Dag, budget_tokens: int) -> Plan:
    nodes: list[dict[str, Any]] = [
        {"id": f"n{i}", "prompt": f"n{i}", "after": [f"n{s}" for s in before]}
        for i, before in enumerate(dag.sources)
    ]
    if dag.max_tokens is not None:
        for node, length in zip(nodes, dag.max_tokens, strict=True):
            node["limits"] = {"max_tokens": length}
    return plan_from_dict(
        {"name": "random", "nodes": nodes, "budget_tokens": budget_tokens, "max_executions": len(nodes) + 1}
    )


class LatencyBackend(Backend):
    """The latency-only fake model: node `n<i>`'s call sleeps `latency[i]` seconds (none without
    latencies) and answers "done", one token. Unlike the test suite's `FunctionBackend` it keeps
    no request and counts no words: what a run costs here is the engine's, not the fake's.
    `durations[i]` is how long the call of node i really took: asyncio's timers wake late (the
    epoll selector rounds a timeout up to the millisecond), so it is a little over latency[i]."""

    name = "latency"

    def __init__(self, latency: list[float] | None) -> None:
        self._latency = latency
        self.durations = [0.0] * (len(latency) if latency is not None else 0)

    @property
    def model_name(self) -> str:
        return "fake"

    async def complete(self, request: Request) -> Response:
        if self._latency is not None:
            node = int(request.messages[-1].text[1:])
            began = time.perf_counter()
            await asyncio.sleep(self._latency[node])
            self.durations[node] = time.perf_counter() - began
        return Response(completions=_DONE, usage=_DONE_USAGE, model="fake")


_DONE = (Completion(text="done", completion_tokens=1),)
_DONE_USAGE = Usage(8, 1)


async def budgetflow_makespan(
    dag: Dag, plan: Plan, concurrency: int, latency: bool
) -> tuple[float, int, list[float]]:
    """(seconds, events kept, how long each node's call really took) of one run of the plan."""
    kept: list[Event] = []
    events = EventStream("makespan")
    events.subscribe(kept.append)
    backend = LatencyBackend(dag.latency if latency else None)
    started = time.perf_counter()
    result = await run_plan(
        plan,
        backend,
        sampling=SamplingParams(max_tokens=4, seed=0),
        concurrency=concurrency,
        events=events,
    )
    seconds = time.perf_counter() - started
    if not result.complete or len(result.failed):
        raise SystemExit(f"the plan did not finish: {result.failed[:5]}")
    return seconds, len(kept), backend.durations


async def bare_makespan(dag: Dag, concurrency: int, latency: bool = True) -> float:
    """A bare asyncio start-when-ready loop (no budget, no ledger, no events): the reference."""
    dependants: list[list[int]] = [[] for _ in dag.sources]
    for node, before in enumerate(dag.sources):
        for source in before:
            dependants[source].append(node)
    waiting = [len(before) for before in dag.sources]
    slots = asyncio.Semaphore(concurrency)
    finished = asyncio.Event()
    left = len(dag.sources)
    tasks: set[asyncio.Task[None]] = set()

    def start(node: int) -> None:
        task = asyncio.ensure_future(run(node))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def run(node: int) -> None:
        nonlocal left
        async with slots:
            if latency:
                await asyncio.sleep(dag.latency[node])
        left -= 1
        if left == 0:
            finished.set()
        for dependant in dependants[node]:
            waiting[dependant] -= 1
            if waiting[dependant] == 0:
                start(dependant)

    started = time.perf_counter()
    for node, count in enumerate(waiting):
        if count == 0:
            start(node)
    await finished.wait()
    return time.perf_counter() - started


async def core_us_per_unit(count: int, concurrency: int) -> float:
    """The execution core alone: `count` one-sample units (budget, ledger, events on), no plan."""
    kept: list[Event] = []
    events = EventStream("core")
    events.subscribe(kept.append)
    context = RunContext(
        LatencyBackend(None),
        budget=Budget(total_tokens=1_000 * count),
        events=events,
        seed=0,
    )
    single = parse_strategy("single")
    slots = asyncio.Semaphore(concurrency)
    sampling = SamplingParams(max_tokens=4, seed=0)

    async def one(index: int) -> None:
        async with slots:
            unit = context.unit(f"n{index}", index=index, kind="node", budget=Budget(total_tokens=1_000))
            await run_strategy(single, unit, (Message("user", f"n{index}"),), sampling=sampling)

    started = time.perf_counter()
    await asyncio.gather(*(one(index) for index in range(count)))
    return (time.perf_counter() - started) / count * 1e6


def _zero_latency_costs(dag: Dag, plan: Plan, concurrency: int, repeats: int) -> tuple[float, float, float]:
    """(ours, bare loop) seconds for the whole DAG with zero latency, and the core's µs per unit:
    each the median of `repeats` runs, interleaved (one short run is at the mercy of the machine)."""
    ours: list[float] = []
    bare: list[float] = []
    core: list[float] = []
    for _ in range(repeats):
        ours.append(asyncio.run(budgetflow_makespan(dag, plan, concurrency, latency=False))[0])
        bare.append(asyncio.run(bare_makespan(dag, concurrency, latency=False)))
        core.append(asyncio.run(core_us_per_unit(len(dag.sources), concurrency)))
    return statistics.median(ours), statistics.median(bare), statistics.median(core)


def langgraph_python() -> Path:
    python = LANGGRAPH_VENV / "bin" / "python"
    if not python.exists():
        print("making benchmarks/.langgraph-venv (LangGraph, for comparison only)", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(LANGGRAPH_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "langgraph"], check=True)
    return python


def langgraph_makespan(dag: Dag, concurrency: int, latency: bool) -> float:
    document = json.dumps({"sources": dag.sources, "latency": dag.latency if latency else None})
    done = subprocess.run(
        [str(langgraph_python()), str(HERE / "makespan_langgraph.py"), str(concurrency)],
        input=document,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"the LangGraph run failed:\n{done.stderr[-2000:]}")
    return float(json.loads(done.stdout.strip().splitlines()[-1])["seconds"])


def schedule_references(dag: Dag, concurrency: int, bound: float, durations: list[float]) -> dict[str, float]:
    """Zero-overhead list schedules of the DAG (benchmarks/makespan_sim.py): over the bound, with
    the scheduler's own priority (longest path in declared max_tokens) and with a clairvoyant one
    (longest path in true latencies); in seconds, the bound of the durations the calls really took and the
    same-priority schedule of those durations (what our run is compared with to see what running
    adds to the rule: dispatch delays, the engine's cost)."""
    by_count = rule_priority(dag)
    clairvoyant = duration_priority(dag.sources, dag.latency)
    return {
        "same_rule_over_bound": list_schedule(dag.sources, dag.latency, concurrency, by_count) / bound,
        "clairvoyant_over_bound": list_schedule(dag.sources, dag.latency, concurrency, clairvoyant) / bound,
        "observed_bound_s": max(Dag(dag.sources, durations).bound(concurrency)),
        "same_rule_observed_s": list_schedule(dag.sources, durations, concurrency, by_count),
    }


def shape_table(
    sizes: list[int], concurrency: int, shapes: int, median_ms: float, sigma: float, lengths_sigma: float
) -> dict[str, Any]:
    """Over `shapes` random DAGs per size (zero-overhead schedules only, no run): how often each
    rule comes within 3% of the bound, and its median and worst ratio."""
    print(f"\nzero-overhead list schedules over {shapes} random DAGs per size (ratio to the bound)")
    print(f"{'nodes':>6} {'rule':<13} {'median':>7} {'worst':>7} {'<=1.03':>7}")
    table: dict[str, Any] = {}
    for size in sizes:
        rng = random.Random(10_000 + size)
        ratios: dict[str, list[float]] = {}
        for _ in range(shapes):
            dag = random_dag(size, rng, median_ms, sigma, lengths_sigma)
            bound = max(dag.bound(concurrency))
            priorities = {
                "ready order": [0.0] * size,
                "node count": node_count_priority(dag.sources),
                **({"max tokens": rule_priority(dag)} if dag.max_tokens is not None else {}),
                # told how much calls vary (--sigma), not how long each takes
                **(
                    {"expected path": expected_path_priority(dag.sources, sigma)}
                    if dag.max_tokens is None
                    else {}
                ),
                "clairvoyant": duration_priority(dag.sources, dag.latency),
            }
            for rule, priority in priorities.items():
                makespan = list_schedule(dag.sources, dag.latency, concurrency, priority)
                ratios.setdefault(rule, []).append(makespan / bound)
        for rule, values in ratios.items():
            within = sum(value <= 1.03 for value in values) / len(values)
            print(
                f"{size:>6} {rule:<13} {statistics.median(values):>7.3f} {max(values):>7.3f} {within:>7.0%}"
            )
            table[f"{size} {rule}"] = {
                "median": round(statistics.median(values), 4),
                "worst": round(max(values), 4),
                "share_within_1.03": round(within, 3),
            }
    return table


def measure_size(size: int, dag: Dag, arguments: argparse.Namespace) -> tuple[dict[str, Any], str]:
    """One size's row (for the JSON line) and its line of the table."""
    concurrency = arguments.concurrency
    # enough that no node starves: the budget is on (every call reserved), not what is measured
    plan = as_plan(dag, budget_tokens=size * (1_000 + 2 * max(dag.max_tokens or [0])))
    critical, work = dag.bound(concurrency)
    bound = max(critical, work)
    ours, kept, durations = asyncio.run(budgetflow_makespan(dag, plan, concurrency, latency=True))
    bare = asyncio.run(bare_makespan(dag, concurrency))
    quick, bare_quick, core = _zero_latency_costs(dag, plan, concurrency, arguments.repeats)
    reference = schedule_references(dag, concurrency, bound, durations)
    row: dict[str, Any] = {
        "depth": len({_layer(dag, i) for i in range(size)}),
        "critical_path_s": round(critical, 3),
        "work_over_concurrency_s": round(work, 3),
        "makespan_s": round(ours, 3),
        "makespan_over_bound": round(ours / bound, 4),
        # the same bound from the calls' real durations (timers wake late): the scheduler's part
        "makespan_over_observed_bound": round(ours / reference["observed_bound_s"], 4),
        "same_rule_over_bound": round(reference["same_rule_over_bound"], 4),
        "clairvoyant_over_bound": round(reference["clairvoyant_over_bound"], 4),
        "makespan_over_same_rule_observed": round(ours / reference["same_rule_observed_s"], 4),
        "us_per_node": round(quick / size * 1e6, 1),
        "core_us_per_unit": round(core, 1),
        # what the plan adds to a one-sample unit of the core: the scheduler's own cost
        "scheduler_us_per_node": round(quick / size * 1e6 - core, 1),
        "bare_asyncio_over_bound": round(bare / bound, 4),
        "bare_us_per_node": round(bare_quick / size * 1e6, 1),
        "events_kept": kept,
    }
    line = (
        f"{size:>6} {row['depth']:>5} {bound:>7.2f} {row['same_rule_over_bound']:>7.3f} "
        f"{row['clairvoyant_over_bound']:>7.3f} {bare / bound:>7.3f} {ours / bound:>7.3f} "
        f"{row['makespan_over_observed_bound']:>7.3f} {row['makespan_over_same_rule_observed']:>7.3f} "
        f"{row['us_per_node']:>7.1f} {row['bare_us_per_node']:>7.1f} {core:>7.1f} "
        f"{row['scheduler_us_per_node']:>7.1f}"
    )
    if arguments.langgraph:
        theirs = langgraph_makespan(dag, concurrency, latency=True)
        theirs_quick = langgraph_makespan(dag, concurrency, latency=False)
        row.update(
            langgraph_makespan_s=round(theirs, 3),
            langgraph_over_bound=round(theirs / bound, 4),
            langgraph_us_per_node=round(theirs_quick / size * 1e6, 1),
        )
        line += f" {theirs / bound:>7.3f} {row['langgraph_us_per_node']:>7.1f}"
    return row, line


HEADER = (
    f"{'nodes':>6} {'depth':>5} {'bound s':>7} {'rule/bd':>7} {'clair/bd':>7} {'bare/bd':>7} "
    f"{'ours/bd':>7} {'ours/obs':>7} {'ours/rule':>7} {'µs/node':>7} {'bare µs':>7} {'core µs':>7} "
    f"{'sched µs':>7}"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[200, 1000, 10000])
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--median-ms", type=float, default=40.0)
    parser.add_argument("--sigma", type=float, default=0.5)
    parser.add_argument(
        "--lengths-sigma",
        type=float,
        default=0.0,
        help="Nodes declare log-normal max_tokens (this sigma) and their latencies scale with it.",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=5, help="Zero-latency runs per size (median).")
    parser.add_argument("--shapes", type=int, default=30, help="Random DAGs per size for the schedule table.")
    parser.add_argument("--langgraph", action="store_true", help="Also run LangGraph (own venv).")
    parser.add_argument("--default-gc", action="store_true", help="Keep CPython's collector thresholds.")
    arguments = parser.parse_args()
    if not arguments.default_gc:
        tune_garbage_collector()
    rng = random.Random(arguments.seed)
    print(HEADER + (f" {'LG/bd':>7} {'LG µs/n':>7}" if arguments.langgraph else ""))
    rows: dict[str, dict[str, Any]] = {}
    for size in arguments.sizes:
        dag = random_dag(size, rng, arguments.median_ms, arguments.sigma, arguments.lengths_sigma)
        row, line = measure_size(size, dag, arguments)
        print(line, flush=True)
        rows[str(size)] = row
    shapes = shape_table(
        arguments.sizes,
        arguments.concurrency,
        arguments.shapes,
        arguments.median_ms,
        arguments.sigma,
        arguments.lengths_sigma,
    )

    def worst(name: str) -> Any:
        return max((row[name] for row in rows.values() if name in row), default=None)

    summary = {
        "makespan_over_bound": worst("makespan_over_bound"),
        "langgraph_over_bound": worst("langgraph_over_bound"),
        "us_per_node": worst("us_per_node"),
        "langgraph_us_per_node": worst("langgraph_us_per_node"),
        **{
            name: worst(name)
            for name in (
                "makespan_over_observed_bound",
                "same_rule_over_bound",
                "clairvoyant_over_bound",
                "makespan_over_same_rule_observed",
                "bare_asyncio_over_bound",
                "bare_us_per_node",
                "core_us_per_unit",
                "scheduler_us_per_node",
            )
        },
        "concurrency": arguments.concurrency,
        "median_ms": arguments.median_ms,
        "sigma": arguments.sigma,
        "lengths_sigma": arguments.lengths_sigma,
        "cpus": os.cpu_count(),
        "gc_threshold": gc.get_threshold()[0],
        "sizes": rows,
        "shapes": shapes,
    }
    print(json.dumps(summary))


_LAYERS: dict[int, dict[int, int]] = {}


def _layer(dag: Dag, node: int) -> int:
    memo = _LAYERS.setdefault(id(dag), {})
    for index, before in enumerate(dag.sources):  # topological order: one pass fills the memo
        if index not in memo:
            memo[index] = 1 + max((memo[s] for s in before), default=-1)
    return memo[node]


if __name__ == "__main__":
    main()
