"""The planner's output, read line by line as it streams: each valid node goes to the running
plan at once; invalid lines are kept with their errors and fed back for repair."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from typing import Final

from budgetflow.backends.base import StreamTail
from budgetflow.errors import BudgetExceeded, ConfigError
from budgetflow.plans.loader import node_from_dict
from budgetflow.plans.model import Node, Plan
from budgetflow.plans.validate import validate_plan
from budgetflow.runtime.context import RunContext, Unit
from budgetflow.types import Message, Request, SamplingParams

__all__ = ["PLANNER_UNIT_BASE", "PlanWriter", "WrittenPlan", "planner_prompt"]

#: Planner units' indices (their seeds) start here, apart from every plan node's.
PLANNER_UNIT_BASE: Final = 10_000_000


def planner_prompt(task: str, template: Plan) -> str:
    text = resources.files("budgetflow.prompts").joinpath("planner.txt").read_text(encoding="utf-8")
    named = [role for role in template.roles if role.routable]
    roles = ""
    if named:
        listed = "; ".join(f"{role.name} ({'/'.join(role.modalities)})" for role in named)
        roles = f'A node may name a "role" to run it: {listed}.'
    return text.replace("{roles}", roles).replace("{task}", task)


@dataclass(slots=True)
class WrittenPlan:
    """What the planner wrote in one attempt: accepted nodes, rejected lines with their errors,
    how many repairs it took, and whether nodes were dispatched while it streamed."""

    accepted: list[Node] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    repairs: int = 0
    streamed: bool = False
    starved: bool = False
    #: When each node was handed to the plan, as the count of planner text read by then.
    dispatched_at: list[int] = field(default_factory=list)


class PlanWriter:
    """Asks the planner, reads its lines, validates each against the nodes before it, and puts
    accepted nodes on `queue` (then None when it is done)."""

    def __init__(
        self,
        context: RunContext,
        template: Plan,
        queue: asyncio.Queue[Node | None],
        *,
        sampling: SamplingParams,
        max_repairs: int,
        max_nodes: int,
        unit_base: int,
        prefix: str = "",
    ) -> None:
        self.context = context
        self.template = template
        self.queue = queue
        self.sampling = sampling
        self.max_repairs = max_repairs
        self.max_nodes = max_nodes
        self.unit_base = unit_base
        self.prefix = prefix
        self.written = WrittenPlan()
        self._pending: list[str] = []  # this round's rejections, fed back in the next
        self._read = 0
        self._calls = 0
        self._partial = ""  # a node written over several lines, until its braces close
        self._live = False  # whether the reply arrives as a stream (nodes dispatched as written)

    async def write(self, prompt: str) -> WrittenPlan:
        messages: list[Message] = [Message("user", prompt)]
        try:
            text = await self._ask(messages)
            while self._pending and self.written.repairs < self.max_repairs and not self.written.starved:
                self.written.repairs += 1
                messages += [Message("assistant", text), Message("user", self._repair_prompt())]
                self._pending = []
                text = await self._ask(messages)
            if not self.written.accepted and not self.written.rejected and not self.written.starved:
                self.written.rejected.append("the planner wrote no node (one JSON object per line)")
        finally:
            self.queue.put_nowait(None)
        return self.written

    def _repair_prompt(self) -> str:
        kept = ", ".join(node.id for node in self.written.accepted) or "none"
        errors = "\n".join(self._pending)
        return (
            f"These lines were rejected:\n{errors}\nWrite corrected lines for them only, one JSON object "
            f"per line. Nodes already accepted keep running and can be used with ${{id}}: {kept}."
        )

    async def _ask(self, messages: Sequence[Message]) -> str:
        self._calls += 1
        unit = self._unit()
        request = Request(messages=tuple(messages), sampling=self.sampling)
        buffer, pieces = "", []
        self._live = True
        try:
            async for delta in unit.stream(request):
                if isinstance(delta, StreamTail):
                    continue
                pieces.append(delta)
                self._read += len(delta)
                buffer += delta
                *lines, buffer = buffer.split("\n")
                for line in lines:
                    self._take(line, more_follows=True)
        except NotImplementedError:  # the endpoint cannot stream: the whole reply at once
            self._live = False
            return await self._ask_whole(unit, request)
        except BudgetExceeded:
            self.written.starved = True
        self._take(buffer, more_follows=False)
        return "".join(pieces)

    async def _ask_whole(self, unit: Unit, request: Request) -> str:
        try:
            response = await unit.call(request)
        except BudgetExceeded:
            self.written.starved = True
            return ""
        text = response.completions[0].text
        *lines, last = text.split("\n")
        for line in lines:
            self._take(line, more_follows=True)
        self._take(last, more_follows=False)
        return text

    def _unit(self) -> Unit:
        name = f"{self.prefix}planner" + ("" if self._calls == 1 else f"/repair{self._calls - 1}")
        return self.context.unit(name, index=self.unit_base + self._calls, kind="planner")

    def _take(self, line: str, *, more_follows: bool) -> None:
        """One line of the planner's text: a node, part of a node written over several lines
        (pretty-printed JSON), or prose, code fences and blank lines (ignored). `more_follows`: the
        reply goes on after this line (an unclosed node waits for the rest)."""
        text = line.strip()
        if self._partial:
            self._partial += "\n" + text
            if _depth(self._partial) > 0 and more_follows:
                return
            text, self._partial = self._partial, ""
        elif text.startswith("{") and _depth(text) > 0 and more_follows:
            self._partial = text
            return
        text = text.strip(",")
        if not text.startswith("{"):
            return
        try:
            node = self._node(text)
        except (ConfigError, ValueError) as error:
            message = f"{text[:200]} -> {error}"
            self.written.rejected.append(message)
            self._pending.append(message)
            return
        self.written.accepted.append(node)
        self.written.streamed = self.written.streamed or (more_follows and self._live)
        self.written.dispatched_at.append(self._read)
        self.queue.put_nowait(node)

    def _node(self, text: str) -> Node:
        try:
            entry = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"not JSON: {error.msg} at column {error.colno}") from None
        if len(self.written.accepted) >= self.max_nodes:
            raise ValueError(f"a plan has at most {self.max_nodes} nodes")
        node = node_from_dict(entry, len(self.written.accepted), "planner")
        candidate = replace(self.template, nodes=(*self.written.accepted, node), outputs=(), source="planner")
        validate_plan(candidate)
        return node


def _depth(text: str) -> int:
    """Braces opened and not closed in `text`, outside JSON strings."""
    depth, quoted, escaped = 0, False, False
    for char in text:
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif not quoted and char in "{}":
            depth += 1 if char == "{" else -1
    return depth
