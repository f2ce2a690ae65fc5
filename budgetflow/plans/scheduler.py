"""The dataflow scheduler's run of one plan (`PlanRun`): the dispatch loop, budget shares, fan-in,
retries and failures. `budgetflow.plans.executor` starts it (`run_plan`, `run_streamed_plan`)."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from budgetflow.answers.voting import answer_key, majority_answer
from budgetflow.budget import Budget
from budgetflow.errors import BudgetflowError
from budgetflow.events import UnitFinished
from budgetflow.plans.allocation import ALLOCATE, node_budget
from budgetflow.plans.consistency import agreement
from budgetflow.plans.model import SUBPLAN, SYNTHESIS_PROMPT, Node, Plan
from budgetflow.plans.node_runner import NodeCall, PlanResources, execute_node
from budgetflow.plans.outputs import extractor, render, value_of
from budgetflow.plans.results import NodeResult
from budgetflow.plans.routing import Routed, route
from budgetflow.plans.topology import choose_topology
from budgetflow.plans.work import (
    LITERAL,
    Endings,
    NamedStrategy,
    NodeFailed,
    Work,
    critical_paths,
    describe_error,
    expected_tokens,
    substitute,
    unit_id_of,
)
from budgetflow.runtime.context import RunContext, Unit
from budgetflow.strategies.base import Strategy
from budgetflow.strategies.parse import parse_strategy
from budgetflow.types import ContentPart, Message, SamplingParams, Spend, TextPart

__all__ = ["STREAM_STRIDE", "PlanRun"]

#: The most nodes a streamed plan may have (the stride of its units' seeds).
STREAM_STRIDE = 1000


class PlanRun:
    def __init__(
        self,
        plan: Plan,
        context: RunContext,
        sampling: SamplingParams,
        concurrency: int,
        budget_tokens: int | None,
        on_node: Callable[[NodeResult], None] | None,
        resources: PlanResources,
    ) -> None:
        self.plan = plan
        self.resources = resources
        #: Unit indices of a node's executions lie this far apart (a streamed plan's size is not
        #: known in advance: it gets a fixed stride).
        self.stride = len(plan.nodes) or STREAM_STRIDE
        #: Put before every unit id (a re-plan's units are apart from the first plan's).
        self.prefix = ""
        self.lanes = resources.lanes()
        self.context = context
        self.sampling = sampling
        self.concurrency = concurrency
        self.budget_tokens = budget_tokens
        self.on_node = on_node
        self.adaptive = plan.allocator is not None and plan.allocator.build().adaptive
        # per node, filled by `_register`: the node, its result, route, strategy, dependants,
        # sources not finished yet, critical path and position in the plan
        self.nodes: dict[str, Node] = {}
        self.results: dict[str, NodeResult] = {}
        self.routes: dict[str, Routed] = {}
        self.strategies: dict[str, Strategy] = {}
        self.parsed: dict[str, Strategy] = {}  # by spec
        self.dependants: dict[str, list[str]] = {}
        self.waiting: dict[str, int] = {}
        self.critical: dict[str, int] = {}
        self.positions: dict[str, int] = {}
        # Units not started yet, kept as they change (a budget share is O(1), not O(nodes)):
        # nodes without a fixed share, nodes with one, and map items.
        self.unstarted: set[str] = set()
        self.unstarted_shared: set[str] = set()
        self.items_unstarted = 0
        paths = critical_paths(plan, sampling.max_tokens)
        for node in plan.nodes:
            self._register(node, paths[node.id])
        self._open_dispatch()
        self.items: dict[str, list[Any]] = {}  # a map node's item values, by index
        self.items_left: dict[str, int] = {}
        self.items_waiting: dict[str, int] = {}  # a map node's items not started yet
        self.live: dict[str, Unit] = {}  # running units, for what they may still spend
        self.unit_nodes: dict[str, str] = {}  # unit id -> its node
        self.fan_in: dict[str, list[Any]] = {}  # a first/quorum node's sources' values so far
        self.origin = time.perf_counter()
        self.topology = choose_topology(plan)
        self.checks = dict(self.topology.checks)  # merge nodes whose sources must agree
        self.redone: dict[str, int] = {}  # re-runs of a checked node's sources so far
        self.checked: dict[str, str] = {}  # what a check found, for the merge node's reason
        #: Why the run stopped early (the execution limit), or "".
        self.halted = ""

    # ---- the dispatch loop ---------------------------------------------------------------------

    def _open_dispatch(self) -> None:
        """The dispatch loop's state: work ready to start, executions running and ended."""
        #: Work ready to start, as (priority, order, work): plain tuples compare faster than a
        #: dataclass's generated ordering.
        self.ready: list[tuple[int, int, Work]] = []
        self.order = itertools.count()
        self.running: dict[asyncio.Task[Any], Work] = {}
        self.starting = 0  # executions started whose first unit is not open yet
        self.executions = 0
        #: Executions (and streamed-node arrivals) that ended, not yet taken by the loop.
        self.endings = Endings()
        self.cancelled: list[asyncio.Task[Any]] = []

    async def run(self, incoming: asyncio.Queue[Node | None] | None = None) -> None:
        """Run every node; with `incoming`, also every node put on it while the run goes on (a
        streaming planner's), until None arrives."""
        roots = [node.id for node in self.plan.nodes if self.waiting[node.id] == 0]
        for root in roots:  # a literal root readies its dependants at once: list roots first
            self._ready(root)
        arrivals: asyncio.Task[Node | None] | None = None
        if incoming is not None:
            arrivals = self.endings.watch(asyncio.ensure_future(incoming.get()))
        try:
            while (self.ready or self.running or arrivals is not None) and not self.halted:
                while self.ready and len(self.running) < self.concurrency and not self.halted:
                    _, _, work = heapq.heappop(self.ready)
                    if self.results[work.node].status in ("ready", "running"):
                        self._start(work)
                if not self.running and arrivals is None:
                    continue
                for task in await self.endings.taken():
                    if task in self.running:  # else an arrival, or cancelled by a fan-in or a failure
                        self._finished(self.running.pop(task), task)
                if self.adaptive:
                    self._rebalance()
                if arrivals is not None and arrivals.done():
                    arrivals = self._arrived(arrivals.result(), incoming)
        finally:
            if arrivals is not None:
                arrivals.cancel()
            for task in self.running:
                task.cancel()
            stopped = [*self.running, *self.cancelled]
            if stopped:  # let every cancelled unit settle its spend before the run returns
                await asyncio.gather(*stopped, return_exceptions=True)
            if self.halted:
                for result in self.results.values():
                    if result.status in ("pending", "ready", "running"):
                        result.status, result.reason = "skipped", f"the run stopped: {self.halted}"
                        self._close(result)

    def _arrived(
        self, node: Node | None, incoming: asyncio.Queue[Node | None] | None
    ) -> asyncio.Task[Node | None] | None:
        """Take a streamed node into the run; the next arrival to wait for (None: no more)."""
        if node is None or incoming is None:
            return None
        self.add_node(node)
        return self.endings.watch(asyncio.ensure_future(incoming.get()))

    def _register(self, node: Node, critical: int) -> None:
        """Take `node` into the run's books (before it runs, whether from the plan or streamed)."""
        self.nodes[node.id] = node
        chosen = self.routes[node.id] = route(node, self.plan, bidders=self.resources.bidders)
        strategy = self.strategies[node.id] = self._strategy(node)
        result = self.results[node.id] = NodeResult(node.id, strategy.name)
        result.role, result.route = chosen.role.name, chosen.reason
        self.dependants.setdefault(node.id, [])
        for dependency in node.dependencies:
            self.dependants.setdefault(dependency, []).append(node.id)
        self.waiting[node.id] = len(node.dependencies)
        self.critical[node.id] = critical
        self.positions[node.id] = len(self.positions)
        if node.limits.budget_share is not None:
            self.unstarted_shared.add(node.id)
        elif not node.literal:
            self.unstarted.add(node.id)

    def add_node(self, node: Node) -> None:
        """A node that arrives while the run goes on (its dependencies arrived before it: a
        streamed plan is acyclic by construction). It starts at once when they are done."""
        self._register(node, critical=expected_tokens(node, self.sampling.max_tokens))
        result = self.results[node.id]
        if not node.dependencies:
            self._ready(node.id)
            return
        for dependency in node.dependencies:
            status = self.results[dependency].status
            if status == "ok":
                self._source_done(node.id, dependency)
            elif status in ("failed", "skipped", "cancelled") and result.status == "pending":
                result.status, result.reason = "skipped", f"{dependency!r} {status}"
                self._close(result)

    def _ready(self, node_id: str, fan_in: str | None = None) -> None:
        node = self.nodes[node_id]
        if node.literal:
            self._succeed(node_id, node.value, "a literal value")
            return
        if node.map is not None:
            self._expand(node)
            return
        self._push(node_id, None, fan_in)

    def _push(
        self,
        node_id: str,
        item: int | None,
        fan_in: str | None = None,
        *,
        redo: int = 0,
        synthesis: bool = False,
    ) -> None:
        work = Work(-self.critical[node_id], next(self.order), node_id, item, fan_in, redo, synthesis)
        if self.results[node_id].status == "pending":
            self.results[node_id].status = "ready"
        heapq.heappush(self.ready, (work.priority, work.order, work))

    def _expand(self, node: Node) -> None:
        assert node.map is not None
        source = self.results[node.map].value
        if not isinstance(source, list):
            self._fail(node.id, f"map needs a list from {node.map!r}, got {type(source).__name__}")
            return
        self.items[node.id] = [None] * len(source)
        self.items_left[node.id] = len(source)
        self.items_waiting[node.id] = len(source)
        self.items_unstarted += len(source)
        self.unstarted.discard(node.id)
        if not source:  # an empty fan-out reduces to an empty result at once
            self._succeed(node.id, self._reduce(node, []), "map over an empty list")
            return
        for index in range(len(source)):
            self._push(node.id, index)

    def _start(self, work: Work) -> None:
        result = self.results[work.node]
        if result.started is None:
            result.started = time.perf_counter() - self.origin
        result.status = "running"
        self.unstarted.discard(work.node)
        self.unstarted_shared.discard(work.node)
        if work.item is not None:
            self.items_waiting[work.node] -= 1
            self.items_unstarted -= 1
        self.executions += 1
        result.executions += 1
        if self.executions > self.plan.max_executions:
            reason = (
                f"{result.executions} executions of {work.node!r} went over the plan's limit of "
                f"{self.plan.max_executions} node executions (max_executions)"
            )
            self._fail(work.node, reason)
            self.halted = reason
            return
        self.starting += 1
        self.running[self.endings.watch(asyncio.ensure_future(self._execute(work)))] = work

    # ---- one execution -------------------------------------------------------------------------

    async def _execute(self, work: Work) -> tuple[Any, str, int]:
        """(value, why it stopped, samples) of one node execution, retried per its limits."""
        node = self.nodes[work.node]
        attempts = node.limits.retries + 1
        last = ""
        for attempt in range(1, attempts + 1):
            try:
                outcome = await self._once(node, work, attempt)
            except (BudgetflowError, TimeoutError) as error:
                last = describe_error(error)
                continue
            if outcome.answer is None:
                last = f"no {node.output} in the reply ({outcome.reason})"
                continue
            try:
                return value_of(node, outcome.answer), outcome.reason, len(outcome.samples)
            except ValueError as error:
                last = f"cannot read the reply as {node.output}: {error}"
        raise NodeFailed(last + (f" (after {attempts} attempts)" if attempts > 1 else ""))

    async def _once(self, node: Node, work: Work, attempt: int) -> Any:
        unit_id = self.prefix + unit_id_of(node, work, attempt)
        index = self._unit_index(node, work, attempt)
        if attempt == 1:
            self.starting -= 1
        unit = self.context.unit(unit_id, index=index, kind="node", budget=self._share(node))
        self.live[unit_id] = unit
        self.unit_nodes[unit_id] = node.id
        result = self.results[node.id]
        if result.budget_tokens is None and unit.ledger.budget.total_tokens is not None:
            result.budget_tokens = unit.ledger.budget.total_tokens
        sampling = self.sampling
        if node.limits.max_tokens is not None:
            sampling = replace(sampling, max_tokens=node.limits.max_tokens)
        strategy = parse_strategy("single") if work.synthesis else self.strategies[node.id]
        role = self.routes[node.id].role
        call = NodeCall(
            node=replace(node, strategy="single") if work.synthesis else node,
            role=replace(role, tools=()) if work.synthesis else role,
            unit=unit,
            messages=self._messages(node, work),
            sampling=sampling,
            extract=extractor(node),
            lane=self.lanes[role.endpoint],
            depth=self.resources.depth,
        )
        running = execute_node(call, strategy, self.resources)
        try:
            timeout = node.limits.timeout_seconds
            outcome = await (running if timeout is None else asyncio.wait_for(running, timeout))
        finally:
            self.live.pop(unit_id, None)
            result.tokens += unit.usage.total_tokens
        result.samples += len(outcome.samples)
        self._announce(unit_id, outcome.answer, outcome.reason, unit.spent, outcome.budget_exhausted)
        return outcome

    def _unit_index(self, node: Node, work: Work, attempt: int) -> int:
        """A unit's index (its seeds) from where it is in the plan, never from completion order:
        a resumed or reordered run draws the same samples. Unique per node, item (or synthesis),
        re-run and attempt."""
        slot = 0 if work.item is None else work.item + 1
        if work.synthesis:
            slot = len(self.items[node.id]) + 1
        within = (slot + work.redo) * (node.limits.retries + 1) + attempt - 1  # maps never re-run
        return self.positions[node.id] + self.stride * within

    def _strategy(self, node: Node) -> Strategy:
        if node.literal:
            return LITERAL
        if node.strategy == ALLOCATE:
            assert self.plan.allocator is not None  # validated
            return self.plan.allocator.strategy()
        if node.strategy == SUBPLAN:
            return NamedStrategy(SUBPLAN)
        parsed = self.parsed.get(node.strategy)
        if parsed is None:  # strategies are frozen: nodes with one spec share one
            parsed = self.parsed[node.strategy] = parse_strategy(node.strategy)
        return parsed

    def _share(self, node: Node) -> Budget | None:
        """A unit's token budget: its node's fixed share, else an equal part of what is free (what
        is neither spent, reserved, claimed by running units nor set aside for fixed shares) per
        unit not started yet; an adaptive `allocate` node may take more (`node_budget`)."""
        if node.limits.budget_share is not None and self.budget_tokens is not None:
            return Budget(total_tokens=int(node.limits.budget_share * self.budget_tokens))
        headroom = self.context.ledger.headroom("total_tokens")
        if headroom is None:
            return self.context.unit_budget
        free = headroom - self._claimed() - self._set_aside()
        waiting = self._units_waiting(node.id)
        allocator = self.plan.allocator
        alone = not self.live and waiting == 0
        if node.strategy == ALLOCATE and allocator is not None and self.adaptive and alone:
            tokens = node_budget(free, waiting, allocator.reserve) or 0  # alone: may draw past its share
        else:  # beside running units: an equal part; `_rebalance` moves what settled nodes leave
            tokens = int(free // (waiting + 1))
        return Budget(total_tokens=max(0, tokens))

    def _claimed(self) -> float:
        """What running units may still spend of their budgets."""
        return sum(max(0.0, unit.ledger.headroom("total_tokens") or 0.0) for unit in self.live.values())

    def _set_aside(self) -> float:
        """The fixed shares of nodes not started yet."""
        total = self.budget_tokens or 0
        return sum(int((self.nodes[n].limits.budget_share or 0) * total) for n in self.unstarted_shared)

    def _units_waiting(self, besides: str) -> int:
        """Units without a fixed share not started yet (a map not expanded counts as one)."""
        return self.starting + len(self.unstarted) - (besides in self.unstarted) + self.items_unstarted

    def _messages(self, node: Node, work: Work) -> tuple[Message, ...]:
        if work.synthesis:
            listed = "\n".join(f"{n}. {render(v)}" for n, v in enumerate(self.items[node.id], start=1))
            prompt = substitute(node.synthesis or SYNTHESIS_PROMPT, {"results": listed})
            return (*self._system(node), Message("user", prompt))
        values: dict[str, str] = {}
        for name in node.references:
            values[name] = render(self.results[name].value)
        if work.item is not None:
            assert node.map is not None
            values["item"] = render(self.results[node.map].value[work.item])
        if work.fan_in is not None:
            values["fan_in"] = work.fan_in
        text = substitute(node.prompt, values)
        content: str | tuple[ContentPart, ...] = (TextPart(text=text), *node.parts) if node.parts else text
        return (*self._system(node), Message("user", content))

    def _system(self, node: Node) -> tuple[Message, ...]:
        role = self.routes[node.id].role
        return (Message("system", role.system),) if role.system else ()

    def _announce(self, unit_id: str, answer: str | None, reason: str, spent: Spend, starved: bool) -> None:
        events = self.context.events
        if events.active:
            events.emit(
                UnitFinished(unit_id=unit_id, answer=answer, reason=reason, spent=spent, starved=starved)
            )

    # ---- results -------------------------------------------------------------------------------

    def _finished(self, work: Work, task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            return
        error = task.exception()
        if error is not None and not isinstance(error, NodeFailed):
            raise error
        if isinstance(error, NodeFailed):
            where = "" if work.item is None else f" (item {work.item})"
            self._fail(work.node, f"{error}{where}")
            return
        value, reason, _ = task.result()
        node = self.nodes[work.node]
        if work.synthesis:
            self._succeed(work.node, value, f"{len(self.items[node.id])} items synthesised: {reason}")
            return
        if work.item is None:
            checked = self.checked.pop(work.node, "")
            self._succeed(work.node, value, f"{checked}; {reason}" if checked else reason)
            return
        self.items[work.node][work.item] = value
        self.items_left[work.node] -= 1
        if self.items_left[work.node] == 0 and self.results[work.node].status == "running":
            values = self.items[work.node]
            if node.reduce == "synthesize":
                self._push(node.id, None, synthesis=True)
                return
            self._succeed(work.node, self._reduce(node, values), f"{len(values)} items, {node.reduce}")

    def _rebalance(self) -> None:
        """Budget a finished adaptive node left unused goes to the `allocate` nodes still running
        (an equal part each, beside the equal parts kept for units not started yet): a node that
        started late with a small share is not starved by one that settled early."""
        running = [
            unit for unit in self.live.values() if self.nodes[self.unit_nodes[unit.id]].strategy == ALLOCATE
        ]
        headroom = self.context.ledger.headroom("total_tokens")
        if not running or headroom is None:
            return
        free = headroom - self._claimed() - self._set_aside()
        share = int(free // (len(running) + self._units_waiting("")))
        for unit in running:
            unit.ledger.extend_tokens(share)

    def _reduce(self, node: Node, values: list[Any]) -> Any:
        if node.reduce == "concat":
            return "\n".join(render(value) for value in values)
        if node.reduce == "vote":
            answer, _ = majority_answer([render(value) for value in values])
            return answer
        return values

    def _succeed(self, node_id: str, value: Any, reason: str) -> None:
        result = self.results[node_id]
        result.status, result.value, result.reason = "ok", value, reason
        self._close(result)
        for dependant in self.dependants[node_id]:
            self._source_done(dependant, node_id)

    def _source_done(self, dependant_id: str, source: str) -> None:
        dependant = self.nodes[dependant_id]
        if self.results[dependant_id].status != "pending":
            return
        policy = dependant.fan_in
        if policy.policy == "all":
            self.waiting[dependant_id] -= 1
            if self.waiting[dependant_id] == 0 and not self._rerun_disagreeing(dependant):
                self._ready(dependant_id)
            return
        values = self.fan_in.setdefault(dependant_id, [])
        values.append(self.results[source].value)
        winner = self._fan_in_winner(dependant, values)
        if winner is not None:
            self._ready(dependant_id, fan_in=winner)  # ready now: later sources are ignored
            self._cancel_sources(dependant, f"{policy.policy} reached at {dependant_id!r}")
        elif len(values) == len(dependant.dependencies):
            self.results[dependant_id].status = "failed"
            self.results[dependant_id].reason = f"no quorum of {policy.k} among {[render(v) for v in values]}"
            self._close(self.results[dependant_id])
            self._skip_dependants(dependant_id, f"{dependant_id!r} failed: no quorum")

    def _rerun_disagreeing(self, node: Node) -> bool:
        """Before a checked merge node starts: when its sources agree less than it asks, run the
        ones that disagree again (at most `redispatch` times); True when it must wait for them."""
        check = self.checks.get(node.id)
        if check is None:
            return False
        sources = list(node.dependencies)
        values = [self.results[source].value for source in sources]
        text = any(self.nodes[source].output == "text" for source in sources)
        score, disagreeing = agreement(values, text=text, threshold=check.min_agreement)
        done = self.redone.get(node.id, 0)
        note = f"sources agree {score:.0%}"
        if score >= check.min_agreement or not disagreeing or done >= check.redispatch:
            again = f" after {done} re-runs" if done else ""
            self.checked[node.id] = note + again + ("" if score >= check.min_agreement else ", merged as is")
            return False
        self.redone[node.id] = done + 1
        for index in disagreeing:
            source = sources[index]
            result = self.results[source]
            result.status, result.reason = "ready", f"re-run: {note} at {node.id!r}"
            self.unstarted.add(source)  # rerunnable sources have no fixed share
            self.waiting[node.id] += 1
            self._push(source, None, redo=done + 1)
        return True

    def _fan_in_winner(self, node: Node, values: list[Any]) -> str | None:
        if node.fan_in.policy == "first":
            return render(values[0])
        keys = [answer_key(render(value)) for value in values]
        for key in keys:
            if key is not None and keys.count(key) >= node.fan_in.k:
                return render(values[keys.index(key)])
        return None

    def _cancel_sources(self, node: Node, reason: str) -> None:
        """Cancel the node's sources still pending or running that nothing else needs."""
        for source in node.dependencies:
            result = self.results[source]
            if result.status not in ("pending", "running", "ready"):
                continue
            others = [other for other in self.dependants[source] if other != node.id]
            if any(self.results[other].status == "pending" for other in others):
                continue
            result.status, result.reason = "cancelled", reason
            self._close(result)
            self._stop_tasks(source)

    def _stop_tasks(self, node_id: str) -> None:
        """Cancel the node's executions in flight (each settles what it spent when it stops)."""
        for task, work in list(self.running.items()):
            if work.node == node_id:
                task.cancel()
                self.running.pop(task)
                self.cancelled.append(task)

    def _fail(self, node_id: str, reason: str) -> None:
        result = self.results[node_id]
        result.status, result.reason = "failed", reason
        self._close(result)
        self._stop_tasks(node_id)  # a failed map's other items stop
        self._skip_dependants(node_id, f"{node_id!r} failed: {reason}")

    def _skip_dependants(self, node_id: str, reason: str) -> None:
        for dependant in self.dependants[node_id]:
            result = self.results[dependant]
            if result.status != "pending":
                continue
            node = self.nodes[dependant]
            if node.fan_in.policy != "all" and not self._fan_in_hopeless(node):
                continue  # another source may still satisfy it
            if node.fan_in.policy != "all":
                reason = f"its fan_in {node.fan_in.policy} can no longer be met ({reason})"
            result.status, result.reason = "skipped", reason
            self._close(result)
            self._skip_dependants(dependant, f"{dependant!r} skipped: {reason}")

    def _fan_in_hopeless(self, node: Node) -> bool:
        states = ("pending", "running", "ready", "ok")
        alive = [s for s in node.dependencies if self.results[s].status in states]
        needed = 1 if node.fan_in.policy == "first" else node.fan_in.k
        return len(alive) < needed

    def _close(self, result: NodeResult) -> None:
        self.unstarted.discard(result.node)
        self.unstarted_shared.discard(result.node)
        self.items_unstarted -= self.items_waiting.pop(result.node, 0)
        result.finished = time.perf_counter() - self.origin
        if result.started is None:
            result.started = result.finished
        if self.on_node is not None:
            self.on_node(result)
