"""What a plan run produced: one `NodeResult` per node and the `PlanResult` around them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from budgetflow.plans.topology import Topology
from budgetflow.types import Spend

__all__ = ["NodeResult", "PlanResult"]


@dataclass(slots=True)
class NodeResult:
    """What one node did: `ok`, `failed`, `cancelled` (a fan-in no longer needed it) or
    `skipped` (a dependency failed), with its value, why it stopped and what it spent."""

    node: str
    strategy: str
    status: str = "pending"
    #: The role that ran it, and why that one (named, routed by modality and cost, an auction).
    role: str = ""
    route: str = ""
    value: Any = None
    reason: str = ""
    samples: int = 0
    tokens: int = 0
    budget_tokens: int | None = None
    executions: int = 0
    started: float | None = None
    finished: float | None = None

    @property
    def seconds(self) -> float:
        if self.started is None or self.finished is None:
            return 0.0
        return self.finished - self.started


@dataclass(slots=True)
class PlanResult:
    plan: str
    nodes: dict[str, NodeResult]
    outputs: dict[str, Any]
    spent: Spend
    budget_tokens: int | None
    seconds: float
    #: The plan's outputs (its result nodes), produced or not.
    wanted: tuple[str, ...] = ()
    #: How the plan's shape was routed, and where consistency was checked.
    topology: Topology | None = None

    @property
    def failed(self) -> list[str]:
        return [name for name, result in self.nodes.items() if result.status in ("failed", "skipped")]

    @property
    def complete(self) -> bool:
        """Every output of the plan was produced."""
        return all(self.nodes[name].status == "ok" for name in self.wanted)
