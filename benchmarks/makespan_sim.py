"""Zero-overhead list schedules of a DAG: what a scheduler could reach on it, for the reference
columns of benchmarks/makespan.py.

A list schedule keeps `concurrency` nodes in flight and, whenever one finishes, starts the ready
node of highest priority (ties: the one that became ready first), with no cost of its own. Two
priorities matter:

* `node_count_priority`: the longest path to a sink counted in nodes, the rule budgetflow's plan
  scheduler uses (it cannot know how long a call will take);
* `duration_priority`: the longest path counted in the calls' true durations, a clairvoyant rule
  no real scheduler has. Even it does not always reach max(critical path, work / concurrency):
  that bound is loosest when the two are close;
* `expected_path_priority`: the longest path averaged over random log-normal durations, a rule
  that knows calls vary but not how long each takes (a node above many parallel paths expects a
  longer remainder than one above a single path of as many nodes). It is there to test whether
  a smarter rule without latencies would close the gap to the clairvoyant one.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable, Sequence

__all__ = ["duration_priority", "expected_path_priority", "list_schedule", "node_count_priority"]


def _dependants(sources: Sequence[Sequence[int]]) -> list[list[int]]:
    dependants: list[list[int]] = [[] for _ in sources]
    for node, before in enumerate(sources):
        for source in before:
            dependants[source].append(node)
    return dependants


def _longest_paths(sources: Sequence[Sequence[int]], weight: Callable[[int], float]) -> list[float]:
    """Per node, the longest path from it to a sink (itself included); nodes are in topological
    order."""
    dependants = _dependants(sources)
    length = [0.0] * len(sources)
    for node in reversed(range(len(sources))):
        length[node] = weight(node) + max((length[d] for d in dependants[node]), default=0.0)
    return length


def node_count_priority(sources: Sequence[Sequence[int]]) -> list[float]:
    return _longest_paths(sources, lambda _: 1.0)


def duration_priority(sources: Sequence[Sequence[int]], durations: Sequence[float]) -> list[float]:
    return _longest_paths(sources, lambda node: durations[node])


def expected_path_priority(
    sources: Sequence[Sequence[int]], sigma: float, draws: int = 32, seed: int = 0
) -> list[float]:
    """Per node, its longest path to a sink averaged over `draws` random durations, each node's
    log-normal with median 1 and `sigma` (drawn apart from the true ones)."""
    rng = random.Random(seed)
    total = [0.0] * len(sources)
    for _ in range(draws):
        durations = [math.exp(rng.gauss(0.0, sigma)) for _ in sources]
        for node, length in enumerate(duration_priority(sources, durations)):
            total[node] += length
    return [length / draws for length in total]


def list_schedule(
    sources: Sequence[Sequence[int]], durations: Sequence[float], concurrency: int, priority: Sequence[float]
) -> float:
    """The makespan of the list schedule (higher `priority` first), in the durations' unit."""
    dependants = _dependants(sources)
    waiting = [len(before) for before in sources]
    order = 0
    ready: list[tuple[float, int, int]] = []
    for node, count in enumerate(waiting):
        if count == 0:
            ready.append((-priority[node], order, node))
            order += 1
    heapq.heapify(ready)
    running: list[tuple[float, int]] = []
    now = 0.0
    for _ in range(len(sources)):
        while ready and len(running) < concurrency:
            _, _, node = heapq.heappop(ready)
            heapq.heappush(running, (now + durations[node], node))
        now, node = heapq.heappop(running)
        for dependant in dependants[node]:
            waiting[dependant] -= 1
            if waiting[dependant] == 0:
                heapq.heappush(ready, (-priority[dependant], order, dependant))
                order += 1
    return now
