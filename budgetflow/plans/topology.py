"""Topology routing (after AdaptOrch): how a plan runs, chosen from its shape in O(V + E).

* `parallel`     — no edges: every node at once, nothing to merge.
* `sequential`   — a chain (width 1, no map): one node after another, each on what came before.
* `hierarchical` — parallel branches merged by one synthesiser, the plan's only sink.
* `hybrid`       — anything else: dataflow with several merge points.

Declared coupling decides where the outputs being merged are checked for consistency: a node's
own `consistency` setting always counts; with the plan's `coupling: tight`, every merge node
whose sources feed only it gets the default check (see `Consistency`) in a hierarchical or
hybrid plan. Parallel and sequential plans have nothing to check.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from budgetflow.plans.model import Consistency, Node, Plan
from budgetflow.plans.validate import rerunnable_sources, topological_order

__all__ = ["Topology", "choose_topology"]

TopologyKind = Literal["parallel", "sequential", "hierarchical", "hybrid"]


@dataclass(frozen=True, slots=True)
class Topology:
    kind: TopologyKind
    reason: str
    depth: int
    width: int
    #: The merge nodes whose sources are checked for consistency, with their settings.
    checks: tuple[tuple[str, Consistency], ...] = ()


def choose_topology(plan: Plan) -> Topology:
    """The plan's topology and why, and where consistency is checked."""
    levels = _levels(plan)
    if not levels:  # a streamed plan before its first node
        return Topology("sequential", "no nodes yet", 0, 0)
    depth = 1 + max(levels.values())
    counts: dict[int, int] = {}
    for level in levels.values():
        counts[level] = counts.get(level, 0) + 1
    width = max(counts.values())
    edges = sum(len(node.dependencies) for node in plan.nodes)
    merges = [node for node in plan.nodes if len(node.dependencies) >= 2 and node.fan_in.policy == "all"]
    has_map = any(node.map is not None for node in plan.nodes)
    if edges == 0:
        kind: TopologyKind = "parallel"
        reason = f"{len(plan.nodes)} independent nodes"
    elif width == 1 and not has_map:
        kind, reason = "sequential", f"a chain of {len(plan.nodes)} nodes"
    elif _hierarchical(plan, merges):
        kind = "hierarchical"
        reason = f"{len(merges[0].dependencies)} parallel branches merged by {merges[0].id!r}"
    else:
        kind = "hybrid"
        reason = f"depth {depth}, width {width}, {len(merges)} merge points" + (
            ", run-time maps" if has_map else ""
        )
    return Topology(kind, reason, depth, width, _checks(plan, kind, merges))


def _levels(plan: Plan) -> dict[str, int]:
    """Each node's longest distance from a root (0 for roots)."""
    by_id = {node.id: node for node in plan.nodes}
    levels: dict[str, int] = {}
    for name in topological_order(plan):
        levels[name] = 1 + max((levels[d] for d in by_id[name].dependencies), default=-1)
    return levels


def _hierarchical(plan: Plan, merges: list[Node]) -> bool:
    """One merge node, the only sink, and every other node on a single branch into it."""
    if len(merges) != 1:
        return False
    sinks = plan.results
    return sinks == (merges[0].id,) and all(
        len(node.dependencies) <= 1 for node in plan.nodes if node.id != merges[0].id
    )


def _checks(plan: Plan, kind: TopologyKind, merges: list[Node]) -> tuple[tuple[str, Consistency], ...]:
    found: list[tuple[str, Consistency]] = []
    tight = plan.coupling == "tight" and kind in ("hierarchical", "hybrid")
    rerunnable = rerunnable_sources(plan)
    for node in merges:
        if node.consistency is not None:
            found.append((node.id, node.consistency))
        elif tight and all(source in rerunnable for source in node.dependencies):
            found.append((node.id, Consistency()))
    return tuple(found)
