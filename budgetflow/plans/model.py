"""A plan as data: nodes, their inputs, roles, strategies, typed outputs and limits.

A node's `prompt` is text with references to other nodes' outputs: `${other}` (every reference in
an argument is resolved, `${a} + ${b}` included), `${item}` inside a `map` node (one item of the
list its `map` node produced), and `${fan_in}` in a node whose fan-in policy is `first` or
`quorum` (the winning output). `after` adds ordering without data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from budgetflow.plans.allocation import PlanAllocator
from budgetflow.types import AudioPart, ContentPart, ImagePart, VideoPart

__all__ = [
    "OUTPUT_TYPES",
    "REDUCERS",
    "REFERENCE",
    "ROUTED",
    "SUBPLAN",
    "SYNTHESIS_PROMPT",
    "Consistency",
    "FanIn",
    "Limits",
    "Node",
    "Plan",
    "Role",
    "modality_of",
]

#: The strategy of a node that a planner decomposes into a sub-plan (recursive planning).
SUBPLAN: Final = "plan"
#: Node roles that are not a role's name: `auto` routes by the node's media and the roles'
#: costs; `auction` lets every role that can take the node bid.
ROUTED: Final = ("auto", "auction")


def modality_of(part: ContentPart) -> str:
    """`image`, `audio`, `video` (or `text`) for a content part."""
    if isinstance(part, ImagePart):
        return "image"
    if isinstance(part, AudioPart):
        return "audio"
    if isinstance(part, VideoPart):
        return "video"
    return "text"


OutputType = Literal["text", "number", "list", "json"]
OUTPUT_TYPES: Final = ("text", "number", "list", "json")
#: How a map node's per-item results combine (`synthesize`: one more call, an LLM combining them).
REDUCERS: Final = ("list", "concat", "vote", "synthesize")
#: The synthesis prompt of `reduce: synthesize` when a node sets none; `${results}` is the list.
SYNTHESIS_PROMPT: Final = (
    "Combine the results of these sub-tasks into one final answer.\n${results}\nFinal answer:"
)
#: `${name}` in a prompt: a node id, `item` (map nodes) or `fan_in`.
REFERENCE: Final = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_\-]*)\}")
SPECIAL: Final = ("item", "fan_in")


@dataclass(frozen=True, slots=True)
class FanIn:
    """When a node with several dependencies may start: `all` of them done, the `first` one,
    or a `quorum` of `k` whose outputs agree (the rest are cancelled mid-generation)."""

    policy: Literal["all", "first", "quorum"] = "all"
    k: int = 1


@dataclass(frozen=True, slots=True)
class Limits:
    """A node's limits: its share of the plan's token budget (0-1; unset: an equal share of
    what is left), its max tokens per sample, its timeout, and how often it is retried."""

    budget_share: float | None = None
    max_tokens: int | None = None
    timeout_seconds: float | None = None
    retries: int = 0


@dataclass(frozen=True, slots=True)
class Consistency:
    """A merge node's check of its sources: when fewer than `min_agreement` of them agree (the
    share holding the most common answer; for text, the mean word overlap), the sources that
    disagree run again, at most `redispatch` times, before the node merges what it has."""

    min_agreement: float = 0.6
    redispatch: int = 1


@dataclass(frozen=True, slots=True)
class Role:
    """A sub-agent a node runs as: its endpoint (a name given to `run_plan`'s `endpoints`;
    `default` is the run's backend), system prompt, the modalities it accepts, its tools (a role
    with tools runs its nodes as a tool-calling loop with `max_tool_calls`), its cost per 1,000
    tokens (routing prefers the cheapest role that can take a node) and its quality (0-1: what
    it bids as its value in an auction)."""

    name: str
    system: str | None = None
    modalities: tuple[str, ...] = ("text",)
    endpoint: str = "default"
    tools: tuple[str, ...] = ()
    cost: float = 1.0
    quality: float = 1.0
    max_tool_calls: int = 4
    tool_protocol: Literal["text", "native"] = "text"
    #: False for the `default` role a plan gets without declaring it: `auto` and `auction`
    #: route among the declared roles.
    routable: bool = True


@dataclass(frozen=True, slots=True)
class Node:
    id: str
    prompt: str
    role: str = "default"
    strategy: str = "single"
    output: OutputType = "text"
    schema: dict[str, object] | None = None
    #: A node whose list output this node fans out over (one unit per item, `${item}`).
    map: str | None = None
    reduce: str = "list"
    fan_in: FanIn = field(default_factory=FanIn)
    after: tuple[str, ...] = ()
    #: Modalities of the node's literal media inputs (image, audio, video); from `parts` when
    #: those are given, else declared.
    media: tuple[str, ...] = ()
    #: Literal media inputs as content parts, sent beside the prompt's text (never flattened).
    parts: tuple[ContentPart, ...] = ()
    limits: Limits = field(default_factory=Limits)
    #: A literal input: the node's output is this value, and it makes no call (`prompt` unused).
    value: Any = None
    #: `reduce: synthesize`: the prompt of the synthesis call (`${results}`: the items' results).
    synthesis: str | None = None
    #: Check that the outputs this node merges agree, re-running those that disagree.
    consistency: Consistency | None = None
    line: int | None = None  # where it was written (YAML/JSON plans), for error messages
    #: Node ids the prompt refers to, in order, without `item` and `fan_in` (computed).
    references: tuple[str, ...] = field(init=False, repr=False, compare=False)
    #: Every node this one waits for: references, its map source, `after` (computed).
    dependencies: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        found = [name for name in REFERENCE.findall(self.prompt) if name not in SPECIAL]
        references = tuple(dict.fromkeys(found))
        waits = [*references, *([self.map] if self.map else []), *self.after]
        if self.parts:
            kinds = tuple(dict.fromkeys([*self.media, *(modality_of(part) for part in self.parts)]))
            object.__setattr__(self, "media", kinds)
        object.__setattr__(self, "references", references)
        object.__setattr__(self, "dependencies", tuple(dict.fromkeys(waits)))

    @property
    def literal(self) -> bool:
        return self.value is not None


@dataclass(frozen=True, slots=True)
class Plan:
    nodes: tuple[Node, ...]
    name: str = "plan"
    #: The nodes whose outputs are the plan's result (default: every node nothing depends on).
    outputs: tuple[str, ...] = ()
    budget_tokens: int | None = None
    roles: tuple[Role, ...] = (Role("default"),)
    #: Most node executions (retries and map items included) before the run stops, naming the
    #: node that went over.
    max_executions: int = 10_000
    #: How the plan's `allocate` nodes share its budget (None: the plan has no such node).
    allocator: PlanAllocator | None = None
    #: `tight`: the outputs a hierarchical or hybrid plan merges must agree (see `topology`).
    coupling: Literal["loose", "tight"] = "loose"
    #: An auction's winner is the cheapest bid whose value is at least this.
    min_bid_value: float = 0.5
    source: str = "<plan>"

    def node(self, node_id: str) -> Node:
        for node in self.nodes:
            if node.id == node_id:
                return node
        raise KeyError(node_id)

    @property
    def results(self) -> tuple[str, ...]:
        if self.outputs:
            return self.outputs
        used = {dependency for node in self.nodes for dependency in node.dependencies}
        return tuple(node.id for node in self.nodes if node.id not in used)
