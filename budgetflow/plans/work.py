"""The scheduler's pieces of work and the small rules about them: how a node execution is named
and indexed, how prompts are filled in, and each node's critical path."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from budgetflow.plans.model import REFERENCE, Node, Plan
from budgetflow.plans.validate import dependants_of, topological_order
from budgetflow.strategies.base import Decision, Sample

__all__ = [
    "LITERAL",
    "Endings",
    "NamedStrategy",
    "NodeFailed",
    "Work",
    "critical_paths",
    "describe_error",
    "expected_tokens",
    "substitute",
    "unit_id_of",
]


@dataclass(slots=True)
class Work:
    """One execution to start: the ready heap orders by (priority, order), then runs it."""

    priority: int
    order: int
    node: str
    item: int | None = None
    fan_in: str | None = None
    #: Which run of the node this is: 0 first, k its k-th re-run by a consistency check.
    redo: int = 0
    #: A map node's synthesis call (`reduce: synthesize`), after its items.
    synthesis: bool = False


@dataclass(frozen=True, slots=True)
class NamedStrategy:
    """The strategy name of a node that runs no strategy: a literal (it makes no call) or one a
    node runner handles (`plan`)."""

    name: str = "literal"

    def decide(self, samples: Sequence[Sample]) -> Decision:
        raise AssertionError(f"a {self.name} node runs no strategy")


LITERAL = NamedStrategy()


class NodeFailed(Exception):
    """A node's last attempt failed; the message says why."""


def unit_id_of(node: Node, work: Work, attempt: int) -> str:
    """`node`, `node[3]` (an item), `node/synthesis`, `node/redo1` (a re-run), with `/try2` …"""
    unit_id = node.id
    if work.item is not None:
        unit_id += f"[{work.item}]"
    if work.synthesis:
        unit_id += "/synthesis"
    if work.redo:
        unit_id += f"/redo{work.redo}"
    return unit_id + ("" if attempt == 1 else f"/try{attempt}")


def describe_error(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return "timed out"
    return str(error)


def substitute(prompt: str, values: dict[str, str]) -> str:
    return REFERENCE.sub(lambda match: values.get(match.group(1), match.group(0)), prompt)


def expected_tokens(node: Node, default_max_tokens: int) -> int:
    """How long a node is expected to run, in the unit the scheduler compares: the tokens one of
    its samples may decode (its `max_tokens`, else the run's). A call's latency grows with what
    it decodes; a literal makes no call."""
    if node.literal:
        return 0
    return node.limits.max_tokens or default_max_tokens


def critical_paths(plan: Plan, default_max_tokens: int) -> dict[str, int]:
    """Per node, the longest path from it to a sink (itself included), in `expected_tokens`: with
    equal limits, the number of nodes on it times the run's max_tokens."""
    dependants = dependants_of(plan)
    nodes = {node.id: node for node in plan.nodes}
    length: dict[str, int] = {}
    for name in reversed(topological_order(plan, dependants)):
        own = expected_tokens(nodes[name], default_max_tokens)
        length[name] = own + max((length[d] for d in dependants[name]), default=0)
    return length


T = TypeVar("T", bound="asyncio.Task[Any]")


class Endings:
    """Tasks that ended, in the order they ended, for a dispatch loop to take: each watched task
    gets one done callback, where `asyncio.wait` would add and remove one on every pending task
    each time around the loop."""

    def __init__(self) -> None:
        self._ended: collections.deque[asyncio.Task[Any]] = collections.deque()
        self._wakeup = asyncio.Event()

    def watch(self, task: T) -> T:
        task.add_done_callback(self._end)
        return task

    def _end(self, task: asyncio.Task[Any]) -> None:
        self._ended.append(task)
        self._wakeup.set()

    async def taken(self) -> list[asyncio.Task[Any]]:
        """Wait until a watched task has ended; every one that ended since, in order."""
        if not self._ended:
            await self._wakeup.wait()
        self._wakeup.clear()
        ended = list(self._ended)
        self._ended.clear()
        return ended
