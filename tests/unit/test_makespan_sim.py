"""The makespan benchmark's zero-overhead list schedules (benchmarks/makespan_sim.py): the
reference its note compares the plan scheduler against."""

from __future__ import annotations

import random
from pathlib import Path
from types import ModuleType

import pytest

from budgetflow.testing.scripts import load_script

ROOT = Path(__file__).resolve().parents[2]


def _sim() -> ModuleType:
    return load_script(ROOT / "benchmarks" / "makespan_sim.py")


# four independent one-second nodes listed first, then a chain of three (4 -> 5 -> 6)
SOURCES = [[], [], [], [], [], [4], [5]]


def test_a_chain_takes_the_sum_of_its_durations() -> None:
    sim = _sim()
    sources = [[], [0], [1]]
    assert sim.list_schedule(sources, [1.0, 2.0, 3.0], 4, sim.node_count_priority(sources)) == 6.0


def test_longest_path_first_starts_the_chain_before_the_independent_nodes() -> None:
    sim = _sim()
    durations = [1.0] * 7
    assert sim.node_count_priority(SOURCES) == [1.0, 1.0, 1.0, 1.0, 3.0, 2.0, 1.0]
    in_ready_order = sim.list_schedule(SOURCES, durations, 2, [0.0] * 7)
    by_path = sim.list_schedule(SOURCES, durations, 2, sim.node_count_priority(SOURCES))
    assert (in_ready_order, by_path) == (5.0, 4.0)  # the bound max(3, 7 / 2) is 3.5


def test_the_clairvoyant_rule_weighs_paths_by_duration() -> None:
    sim = _sim()
    # roots: node 0 (1 s), node 1 (5 s), node 2 (1 s) before node 3 (1 s)
    sources = [[], [], [], [2]]
    durations = [1.0, 5.0, 1.0, 1.0]
    assert sim.duration_priority(sources, durations) == [1.0, 5.0, 2.0, 1.0]
    # by node count the two-node branch goes first, then node 0 (ready before node 1): 1 waits
    assert sim.list_schedule(sources, durations, 2, sim.node_count_priority(sources)) == 6.0
    assert sim.list_schedule(sources, durations, 2, sim.duration_priority(sources, durations)) == 5.0


def test_declared_lengths_scale_latencies_and_leave_the_default_dags_alone() -> None:
    """`--lengths-sigma`: nodes declare max_tokens and their latencies scale with it; without it
    the benchmark draws the same DAGs as before and its rule counts nodes."""
    bench = load_script(ROOT / "benchmarks" / "makespan.py")
    plain = bench.random_dag(60, random.Random(3), 40.0, 0.5)
    assert plain == bench.random_dag(60, random.Random(3), 40.0, 0.5, 0.0)
    assert plain.max_tokens is None
    assert bench.rule_priority(plain) == _sim().node_count_priority(plain.sources)
    varied = bench.random_dag(60, random.Random(3), 40.0, 0.5, 0.8)
    assert varied.sources == plain.sources
    assert len(set(varied.max_tokens)) > 10
    for before, after, length in zip(plain.latency, varied.latency, varied.max_tokens, strict=True):
        assert after == pytest.approx(before * length / bench.MEDIAN_MAX_TOKENS)
    plan = bench.as_plan(varied, 100_000)
    assert [node.limits.max_tokens for node in plan.nodes] == varied.max_tokens


def test_the_expected_path_favours_a_node_above_many_parallel_paths() -> None:
    """Node 0 feeds eight parallel leaves, node 9 a single node: both heads of two-node paths,
    a tie by node count. With durations that vary, the longest of eight paths is expected to be
    longer than one path, so the expected-path rule starts node 0 first; with none, it counts."""
    sim = _sim()
    sources: list[list[int]] = [[], *[[0] for _ in range(8)], [], [9]]
    by_count = sim.node_count_priority(sources)
    assert by_count[0] == by_count[9] == 2.0
    expected = sim.expected_path_priority(sources, 0.5, draws=64, seed=1)
    assert expected[0] > expected[9] + 0.3
    assert sim.expected_path_priority(sources, 0.0, draws=4) == pytest.approx(by_count)
