"""A plan checked before anything runs; every error names the node and the problem.

Checked: duplicate ids; references to unknown nodes; cycles (printed as a path); a `map` over a
node whose output is not a list; fan-in policies that cannot be met (a quorum larger than the
node's dependencies, a `first`/`quorum` node naming its sources directly instead of
`${fan_in}`); `${item}` outside a map node; outputs no result needs; roles no configured
sub-agent provides; media a role cannot take; unknown strategies and reducers; budget shares
that add up to more than the plan's budget.
"""

from __future__ import annotations

from collections.abc import Iterable

from budgetflow.errors import ConfigError
from budgetflow.plans.allocation import ALLOCATE
from budgetflow.plans.model import REDUCERS, ROUTED, SUBPLAN, Node, Plan
from budgetflow.strategies.parse import parse_strategy

__all__ = ["PlanError", "dependants_of", "rerunnable_sources", "topological_order", "validate_plan"]


class PlanError(ConfigError):
    """A plan that cannot run, and why (node and problem named)."""


def validate_plan(plan: Plan) -> None:
    """Raise `PlanError` with every problem found, one per line."""
    problems = [*_identities(plan), *_references(plan)]
    if not problems:  # a graph with unknown nodes has no meaningful cycle check
        problems += _cycles(plan)
    problems += [*_kinds(plan), *_roles(plan), *_budget(plan), *_unused(plan)]
    if problems:
        raise PlanError(f"{plan.source}: the plan cannot run:\n" + "\n".join(f"  {p}" for p in problems))


def _where(node: Node) -> str:
    return f"node {node.id!r}" + (f" (line {node.line})" if node.line else "")


def _identities(plan: Plan) -> Iterable[str]:
    seen: set[str] = set()
    for node in plan.nodes:
        if node.id in seen:
            yield f"{_where(node)}: the id is used by another node too"
        if node.id in ("item", "fan_in"):
            yield f"{_where(node)}: 'item' and 'fan_in' are reserved names"
        seen.add(node.id)


def _references(plan: Plan) -> Iterable[str]:
    known = {node.id for node in plan.nodes}
    for node in plan.nodes:
        for name in node.dependencies:
            if name not in known:
                how = "map" if name == node.map else "after" if name in node.after else "${" + name + "}"
                yield f"{_where(node)}: {how} refers to {name!r}, which is not a node of the plan"
    for output in plan.outputs:
        if output not in known:
            yield f"outputs: {output!r} is not a node of the plan"


def _cycles(plan: Plan) -> Iterable[str]:
    """Every cycle found by a depth-first walk (iterative: deep plans need no recursion)."""
    graph = {node.id: node.dependencies for node in plan.nodes}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    found: list[str] = []
    for root in graph:
        if root in state:
            continue
        state[root] = 1
        path = [root]
        stack = [iter(graph[root])]
        while stack:
            dependency = next(stack[-1], None)
            if dependency is None:
                stack.pop()
                state[path.pop()] = 2
            elif state.get(dependency) == 1:
                cycle = [*path[path.index(dependency) :], dependency]
                found.append("cycle: " + " -> ".join(reversed(cycle)))
            elif dependency not in state:
                state[dependency] = 1
                path.append(dependency)
                stack.append(iter(graph[dependency]))
    return found


def _kinds(plan: Plan) -> Iterable[str]:
    by_id = {node.id: node for node in plan.nodes}
    for node in plan.nodes:
        where = _where(node)
        if node.map is not None and node.map in by_id and by_id[node.map].output != "list":
            source = by_id[node.map]
            yield f"{where}: map needs a list, but {source.id!r} outputs {source.output}"
        if "${item}" in node.prompt and node.map is None:
            yield f"{where}: ${{item}} is only defined in a map node"
        if node.map is None and node.reduce != "list":
            yield f"{where}: reduce applies to map nodes only"
        if node.synthesis is not None and node.reduce != "synthesize":
            yield f"{where}: synthesis is the prompt of reduce: synthesize"
        if node.consistency is not None:
            yield from _consistency(plan, node, where)
        if node.reduce not in REDUCERS:
            yield f"{where}: reduce must be one of {', '.join(REDUCERS)}, got {node.reduce!r}"
        yield from _fan_in(node, where)
        if node.literal:
            yield from _literal(node, where)
            continue
        if node.strategy == SUBPLAN:
            continue
        if node.strategy == ALLOCATE:
            if plan.allocator is None:
                yield f"{where}: strategy allocate needs the plan's allocator (allocator:, or --allocator)"
            continue
        try:
            parse_strategy(node.strategy)
        except ConfigError as error:
            yield f"{where}: strategy {node.strategy!r}: {error}"


_LITERAL_TYPES: dict[str, tuple[type, ...]] = {
    "text": (str,),
    "number": (int, float),
    "list": (list,),
    "json": (dict,),
}


def _literal(node: Node, where: str) -> Iterable[str]:
    kinds = _LITERAL_TYPES[node.output]
    if not isinstance(node.value, kinds) or isinstance(node.value, bool):
        yield f"{where}: its value is {type(node.value).__name__}, but its output is {node.output}"
    if node.dependencies or node.map is not None:
        yield f"{where}: a literal value depends on nothing (no references, map or after)"


def _consistency(plan: Plan, node: Node, where: str) -> Iterable[str]:
    if len(node.dependencies) < 2 or node.fan_in.policy != "all":
        yield f"{where}: consistency checks two or more sources merged with fan_in all"
        return
    rerunnable = rerunnable_sources(plan)
    fixed = [source for source in node.dependencies if source not in rerunnable]
    if fixed:
        yield (
            f"{where}: consistency re-runs its sources, so each must be a model node (no map, no "
            f"literal value) feeding only this node; {', '.join(fixed)} cannot be re-run"
        )


def _fan_in(node: Node, where: str) -> Iterable[str]:
    policy, sources = node.fan_in.policy, [*node.references, *node.after]
    if policy == "all":
        if "${fan_in}" in node.prompt:
            yield f"{where}: ${{fan_in}} needs fan_in first or quorum(k)"
        return
    if node.references:
        yield (
            f"{where}: with fan_in {policy}, refer to the winning output as ${{fan_in}}, not to "
            f"{', '.join(node.references)} (the others are cancelled); list the sources in 'after'"
        )
    if policy == "quorum" and node.fan_in.k > len(sources):
        k = node.fan_in.k
        yield f"{where}: quorum({k}) needs at least {k} sources in 'after', has {len(sources)}"
    if not sources:
        yield f"{where}: fan_in {policy} needs sources in 'after'"


def _roles(plan: Plan) -> Iterable[str]:
    roles = {role.name: role for role in plan.roles}
    for node in plan.nodes:
        if node.role in ROUTED:
            candidates = [role for role in plan.roles if role.routable] or plan.roles
            if not any(all(m in role.modalities for m in node.media) for role in candidates):
                needs = ", ".join(node.media) or "text"
                yield f"{_where(node)}: role {node.role}: no configured role takes {needs}"
            continue
        role = roles.get(node.role)
        if role is None:
            yield f"{_where(node)}: no configured role is {node.role!r} (roles: {', '.join(roles)})"
            continue
        for modality in node.media:
            if modality not in role.modalities:
                yield (
                    f"{_where(node)}: role {role.name!r} takes {', '.join(role.modalities)}, not {modality}"
                )


def _budget(plan: Plan) -> Iterable[str]:
    shares = [(node, node.limits.budget_share) for node in plan.nodes if node.limits.budget_share]
    total = sum(share for _, share in shares if share is not None)
    if total > 1 + 1e-9:
        named = ", ".join(f"{node.id} {share:g}" for node, share in shares)
        yield f"budget shares add up to {total:g} of the plan's budget ({named}): at most 1"
    if shares and plan.budget_tokens is None:
        yield "budget shares need a plan budget (budget_tokens, or --budget-tokens)"


def _unused(plan: Plan) -> Iterable[str]:
    if not plan.outputs:
        return
    needed: set[str] = set()
    frontier = list(plan.outputs)
    by_id = {node.id: node for node in plan.nodes}
    while frontier:
        name = frontier.pop()
        if name in needed or name not in by_id:
            continue
        needed.add(name)
        frontier.extend(by_id[name].dependencies)
    for node in plan.nodes:
        if node.id not in needed:
            yield f"{_where(node)}: its output reaches none of the plan's outputs ({', '.join(plan.outputs)})"


def dependants_of(plan: Plan) -> dict[str, list[str]]:
    """Per node, the nodes that depend on it, in plan order."""
    dependants: dict[str, list[str]] = {node.id: [] for node in plan.nodes}
    for node in plan.nodes:
        for dependency in node.dependencies:
            dependants[dependency].append(node.id)
    return dependants


def topological_order(plan: Plan, dependants: dict[str, list[str]] | None = None) -> list[str]:
    """Node ids, every node after its dependencies, in plan order where free (Kahn's algorithm;
    a validated plan has no cycle). `dependants`: `dependants_of(plan)`, when the caller has it."""
    waiting = {node.id: len(node.dependencies) for node in plan.nodes}
    dependants = dependants if dependants is not None else dependants_of(plan)
    order = [node.id for node in plan.nodes if waiting[node.id] == 0]
    for name in order:  # grows while it is walked
        for dependant in dependants[name]:
            waiting[dependant] -= 1
            if waiting[dependant] == 0:
                order.append(dependant)
    return order


def rerunnable_sources(plan: Plan) -> set[str]:
    """Nodes a consistency check may run again: not maps, not literals, feeding one node only."""
    feeds: dict[str, int] = {node.id: 0 for node in plan.nodes}
    for node in plan.nodes:
        for dependency in node.dependencies:
            feeds[dependency] += 1
    return {node.id for node in plan.nodes if feeds[node.id] == 1 and node.map is None and not node.literal}
