"""How one node execution runs once its unit is open: as a strategy, a tool loop, or a runner.

A node whose role has tools runs the tool-calling loop (`budgetflow.tools.run_agent`) with the
role's tool-call budget; a node whose strategy names a runner given to the plan (`plan`: a
planner that decomposes the node into a sub-plan, say) runs that; every other node runs its
strategy (`run_strategy`). All three draw through the same unit, on the lane (endpoint) of the
node's role: one ledger, one event stream, one journal.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from budgetflow.backends.base import Backend
from budgetflow.errors import ConfigError
from budgetflow.plans.model import Node, Plan, Role
from budgetflow.plans.routing import Bidder
from budgetflow.runtime.context import Unit
from budgetflow.runtime.strategy_runner import StrategyOutcome, run_strategy
from budgetflow.strategies.base import Sample, Strategy
from budgetflow.tools import AgentOptions, Tool, default_tools, run_agent
from budgetflow.types import Message, SamplingParams

__all__ = ["NodeCall", "NodeRunner", "PlanResources", "execute_node"]


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeCall:
    """One node execution as a runner sees it."""

    node: Node
    role: Role
    unit: Unit
    messages: tuple[Message, ...]
    sampling: SamplingParams
    extract: Callable[[str], str | None]
    lane: int = 0
    #: How deep in nested plans this node is (0: the top plan).
    depth: int = 0


NodeRunner = Callable[[NodeCall], Awaitable[StrategyOutcome]]


@dataclass(frozen=True, slots=True, kw_only=True)
class PlanResources:
    """What a plan's roles need beyond the run's backend: named `endpoints` (a role's
    `endpoint`), `tools` by name (None: the calculator and the Python runner), `bidders` per role
    for auctions, and `runners` by strategy name (`plan`: a planner for recursive planning)."""

    endpoints: Mapping[str, Backend] = field(default_factory=dict)
    tools: Mapping[str, Tool] | None = None
    bidders: Mapping[str, Bidder] = field(default_factory=dict)
    runners: Mapping[str, NodeRunner] = field(default_factory=dict)
    depth: int = 0

    def lanes(self) -> dict[str, int]:
        """Endpoint name -> lane of the run context (`default` is lane 0, the run's backend)."""
        return {"default": 0, **{name: index + 1 for index, name in enumerate(self.endpoints)}}

    def toolbox(self) -> Mapping[str, Tool]:
        return default_tools() if self.tools is None else self.tools

    def check(self, plan: Plan) -> None:
        """Every role's endpoint and tools exist; `ConfigError` naming the role otherwise."""
        lanes, tools = self.lanes(), self.toolbox()
        for role in plan.roles:
            if role.endpoint not in lanes:
                known = ", ".join(lanes)
                raise ConfigError(
                    f"role {role.name!r}: no endpoint named {role.endpoint!r} (endpoints: {known})"
                )
            missing = [name for name in role.tools if name not in tools]
            if missing:
                known = ", ".join(tools) or "none"
                raise ConfigError(f"role {role.name!r}: no tool named {missing[0]!r} (tools: {known})")


async def execute_node(call: NodeCall, strategy: Strategy, resources: PlanResources) -> StrategyOutcome:
    """Run one node execution on its unit (see the module's description)."""
    if call.role.tools:
        return await _agent(call, resources)
    runner = resources.runners.get(call.node.strategy)
    if runner is not None:
        return await runner(call)
    if call.node.strategy in ("plan",):
        raise ConfigError(f"node {call.node.id!r}: strategy 'plan' needs a planner (budgetflow.planner)")
    return await run_strategy(
        strategy,
        call.unit,
        call.messages,
        sampling=call.sampling,
        extract=call.extract,
        events=call.unit.context.events,
        question_id=call.unit.id,
        lane=call.lane,
    )


async def _agent(call: NodeCall, resources: PlanResources) -> StrategyOutcome:
    toolbox = resources.toolbox()
    options = AgentOptions(
        tools=tuple(toolbox[name] for name in call.role.tools),
        max_tool_calls=call.role.max_tool_calls,
        protocol=call.role.tool_protocol,
    )
    outcome = await run_agent(
        call.unit, call.messages, options, sampling=call.sampling, extract=call.extract, lane=call.lane
    )
    samples = tuple(
        Sample(text=reply, answer=call.extract(reply), completion_tokens=0) for reply in outcome.replies
    )
    return StrategyOutcome(
        answer=outcome.answer,
        reason=outcome.reason,
        samples=samples,
        usage=call.unit.usage,
        rounds=outcome.turns,
        budget_exhausted=outcome.budget_exhausted,
    )
