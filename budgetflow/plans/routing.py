"""Which role (sub-agent) runs a node: named, routed by modality and cost, or won at auction.

A node names its role, or says `auto` — the cheapest role whose modalities cover every media
input of the node (an image goes to a role that takes images; plan order breaks ties) — or
`auction` (Scaling Small Agents Through Strategy Auctions): every role that can take the node
bids an estimated cost and value, and the cheapest bid whose value reaches the plan's
`min_bid_value` wins. The default bid prices the node's worst case (prompt plus max tokens for
each sample of its strategy) at the role's cost per 1,000 tokens and offers the role's declared
quality as its value; `run_plan(bidders=…)` replaces it per role.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from budgetflow.errors import ConfigError
from budgetflow.plans.model import Node, Plan, Role

__all__ = ["Bid", "Bidder", "Routed", "can_take", "default_bid", "route"]


@dataclass(frozen=True, slots=True)
class Bid:
    role: str
    cost: float
    value: float


Bidder = Callable[[Role, Node], Bid]


@dataclass(frozen=True, slots=True)
class Routed:
    role: Role
    reason: str
    bids: tuple[Bid, ...] = ()


def can_take(role: Role, node: Node) -> bool:
    """The role accepts every media input of the node."""
    return all(modality in role.modalities for modality in node.media)


def estimated_tokens(node: Node, default_max_tokens: int = 256) -> int:
    """A node's worst case: its prompt (about 4/3 tokens a word) plus max tokens per sample."""
    samples = _samples_of(node.strategy)
    prompt = len(node.prompt.split()) * 4 // 3 + 1
    return samples * (prompt + (node.limits.max_tokens or default_max_tokens))


def _samples_of(strategy: str) -> int:
    _, _, count = strategy.partition("@")
    digits = count.split(",")[0]
    return int(digits) if digits.isdigit() else 1


def default_bid(role: Role, node: Node) -> Bid:
    return Bid(role.name, role.cost * estimated_tokens(node) / 1000, role.quality)


def route(
    node: Node,
    plan: Plan,
    *,
    bidders: Mapping[str, Bidder] | None = None,
) -> Routed:
    """The role that runs `node`, and why. `ConfigError` when no role can take it."""
    roles = {role.name: role for role in plan.roles}
    if node.role not in ("auto", "auction"):
        return Routed(roles[node.role], "named")
    candidates = [role for role in plan.roles if role.routable] or list(plan.roles)
    able = [role for role in candidates if can_take(role, node)]
    if not able:
        needs = ", ".join(node.media) or "text"
        raise ConfigError(f"node {node.id!r}: no role takes {needs} (roles: {_describe(plan.roles)})")
    if node.role == "auto":
        chosen = min(able, key=lambda role: role.cost)  # min keeps the first of equals: plan order
        media = "+".join(node.media) or "text"
        return Routed(chosen, f"auto: cheapest role taking {media} (cost {chosen.cost:g}/1k tokens)")
    return _auction(node, able, plan.min_bid_value, bidders or {})


def _auction(node: Node, able: Sequence[Role], threshold: float, bidders: Mapping[str, Bidder]) -> Routed:
    bids = tuple(bidders.get(role.name, default_bid)(role, node) for role in able)
    sufficient = [(bid, role) for bid, role in zip(bids, able, strict=True) if bid.value >= threshold]
    if not sufficient:
        best = max(bids, key=lambda bid: bid.value)
        raise ConfigError(
            f"node {node.id!r}: no bid reaches value {threshold:g} (best: {best.role} at {best.value:g})"
        )
    bid, role = min(sufficient, key=lambda pair: pair[0].cost)
    listed = ", ".join(f"{b.role} {b.cost:.3g}@{b.value:g}" for b in bids)
    return Routed(role, f"auction: cheapest sufficient bid {bid.role} ({listed})", bids)


def _describe(roles: Sequence[Role]) -> str:
    return "; ".join(f"{role.name} takes {'/'.join(role.modalities)}" for role in roles)
