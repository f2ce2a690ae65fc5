"""The LLM planner: nodes start while the plan is still being written, invalid lines are repaired
with their errors fed back (a bounded number of times), re-plans happen only when the budget left
covers them, and a node may be planned recursively — every call inside one budget."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

from budgetflow.backends.scripted import FunctionBackend
from budgetflow.planner import Planner, run_task
from budgetflow.types import Request, Response, SamplingParams

SAMPLING = SamplingParams(max_tokens=16, seed=5)


def _is_planner(request: Request) -> bool:
    return request.messages[0].text.startswith("You are a planner")


def _task_of(request: Request) -> str:
    text = request.messages[0].text
    return text[text.index("Task: ") + 6 :].split("\n")[0]


class PlannerBackend(FunctionBackend):
    """Answers node prompts with `solve`; the planner's prompts with `plan(request, call)` lines,
    streamed one line at a time (`gate` runs between lines)."""

    def __init__(
        self,
        plan: Callable[[Request, int], list[str]],
        solve: Callable[[str], str],
        *,
        stream: bool = True,
        gate: bool = False,
    ) -> None:
        super().__init__(self._reply)
        self.plan, self.solve, self.streams, self.gate = plan, solve, stream, gate
        self.log: list[str] = []
        self.planner_calls = 0
        self.node_started = asyncio.Event()
        self.served = 0  # tokens of every reply this backend sent

    async def complete(self, request: Request) -> Response:
        response = await super().complete(request)
        self.served += response.usage.total_tokens
        return response

    def _reply(self, request: Request, index: int) -> str:
        if _is_planner(request):
            self.planner_calls += 1
            self.log.append("planner (whole)")
            return "\n".join(self.plan(request, self.planner_calls))
        self.log.append(f"node: {request.messages[-1].text}")
        self.node_started.set()
        return self.solve(request.messages[-1].text)

    async def stream(self, request: Request) -> AsyncIterator[str]:
        if not self.streams:
            raise NotImplementedError("PlannerBackend.stream")
        assert _is_planner(request)
        self.planner_calls += 1
        lines = self.plan(request, self.planner_calls)
        for number, line in enumerate(lines):
            self.log.append(f"planner line {number}")
            yield line + "\n"
            if number == 0 and self.gate:  # the first node must start before the planner writes on
                await asyncio.wait_for(self.node_started.wait(), timeout=10)
        self.log.append("planner done")


def _sums(text: str) -> str:
    if "3 + 4" in text:
        return "Answer: 7"
    if "5 + 6" in text:
        return "Answer: 11"
    if "7 * 11" in text:
        return "Answer: 77"
    return "I do not know"


GOOD = [
    '{"id": "left", "prompt": "What is 3 + 4?", "output": "number"}',
    '{"id": "right", "prompt": "What is 5 + 6?", "output": "number"}',
    '{"id": "product", "prompt": "What is ${left} * ${right}?", "output": "number"}',
]


def test_nodes_start_while_the_planner_is_still_writing() -> None:
    backend = PlannerBackend(lambda request, call: GOOD, _sums, gate=True)
    result = asyncio.run(
        run_task("What is (3 + 4) * (5 + 6)?", backend, sampling=SAMPLING, budget_tokens=5_000)
    )
    assert result.answer == 77 and result.replans == 0
    written, plan = result.attempts[0]
    assert written.streamed and [n.id for n in written.accepted] == ["left", "right", "product"]
    assert backend.log.index("node: What is 3 + 4?") < backend.log.index("planner done")
    assert plan.nodes["product"].status == "ok" and result.spent.total_tokens <= 5_000


def test_an_endpoint_that_cannot_stream_gets_the_whole_plan_at_once() -> None:
    backend = PlannerBackend(lambda request, call: GOOD, _sums, stream=False)
    result = asyncio.run(run_task("What is (3 + 4) * (5 + 6)?", backend, sampling=SAMPLING))
    assert result.answer == 77 and not result.attempts[0][0].streamed


def test_invalid_lines_are_repaired_with_the_validation_errors_fed_back() -> None:
    prompts: list[str] = []

    def plan(request: Request, call: int) -> list[str]:
        prompts.append(request.messages[-1].text)
        if call == 1:
            return [
                GOOD[0],
                '{"id": "right", "prompt": "What is 5 + 6?", "output": "numbr"}',
                '{"id": "product", "prompt": "What is ${left} * ${rigth}?", "output": "number"}',
                "{not json",
            ]
        return [GOOD[1], GOOD[2]]

    backend = PlannerBackend(plan, _sums)
    result = asyncio.run(run_task("What is (3 + 4) * (5 + 6)?", backend, sampling=SAMPLING))
    written = result.attempts[0][0]
    assert written.repairs == 1 and len(written.rejected) == 3 and result.answer == 77
    repair = prompts[1]
    assert "output must be one of text, number, list, json, got 'numbr'" in repair
    assert "refers to 'rigth', which is not a node of the plan" in repair
    assert "not JSON" in repair and "already accepted keep running" in repair and "left" in repair


def test_repairs_are_bounded() -> None:
    backend = PlannerBackend(lambda request, call: ['{"id": "x", "prompt": 3}'], _sums)
    planner = Planner(max_repairs=2, max_replans=0)
    result = asyncio.run(run_task("anything", backend, planner=planner, sampling=SAMPLING))
    assert backend.planner_calls == 3 and result.attempts[0][0].repairs == 2
    assert result.answer is None and "no re-plan left" in result.decisions[-1]


FAILING = ['{"id": "guess", "prompt": "What is the mystery number?", "output": "number"}']


def _replanning_backend() -> PlannerBackend:
    return PlannerBackend(lambda request, call: FAILING if call == 1 else GOOD, _sums)


def test_a_failed_plan_is_replanned_when_the_budget_covers_it() -> None:
    backend = _replanning_backend()
    result = asyncio.run(
        run_task("What is (3 + 4) * (5 + 6)?", backend, sampling=SAMPLING, budget_tokens=20_000)
    )
    assert result.replans == 1 and result.answer == 77
    assert "1 node failed (guess)" in result.decisions[0] and "re-planning" in result.decisions[0]
    assert result.attempts[1][1].nodes["product"].status == "ok"
    assert result.spent.total_tokens <= 20_000


def test_no_replan_when_the_budget_left_does_not_cover_it() -> None:
    backend = _replanning_backend()
    planner = Planner(max_tokens=64)
    task = "What is (3 + 4) * (5 + 6)?"
    result = asyncio.run(run_task(task, backend, sampling=SAMPLING, budget_tokens=1_500, planner=planner))
    assert result.replans == 0 and backend.planner_calls == 1
    assert "not re-planned: it would cost about" in result.decisions[0]
    assert result.spent.total_tokens <= 1_500
    # a budget too small for even the planner's call starves the task; it never passes the cap
    starved = asyncio.run(run_task("x", _replanning_backend(), sampling=SAMPLING, budget_tokens=300))
    assert starved.answer is None and "did not fit the budget" in starved.decisions[0]
    assert starved.spent.total_tokens == 0


def test_a_node_is_planned_recursively_inside_its_own_budget() -> None:
    def plan(request: Request, call: int) -> list[str]:
        if _task_of(request).startswith("Multiply"):
            return [GOOD[0], GOOD[1], GOOD[2]]
        return [
            '{"id": "inner", "prompt": "Multiply the two sums", "strategy": "plan", "output": "number"}',
            '{"id": "done", "prompt": "Is ${inner} right? What is 7 * 11?", "output": "number"}',
        ]

    backend = PlannerBackend(plan, _sums, stream=False)
    result = asyncio.run(run_task("Big task", backend, sampling=SAMPLING, budget_tokens=8_000))
    inner = result.result.nodes["inner"]
    assert inner.status == "ok" and inner.value == 77 and "planned into 3 nodes at depth 1" in inner.reason
    assert result.answer == 77 and backend.planner_calls == 2
    assert inner.tokens > 0 and result.spent.total_tokens <= 8_000
    # every call the backend served is in the task's ledger once: the nested plan's included
    assert result.spent.total_tokens == backend.served


def test_a_node_written_over_several_lines_is_read_whole() -> None:
    pretty = [
        "{",
        '  "id": "left",',
        '  "prompt": "What is 3 + 4? {braces} in text",',
        '  "output": "number"',
        "}",
    ]
    backend = PlannerBackend(lambda request, call: pretty, _sums)
    result = asyncio.run(run_task("What is 3 + 4?", backend, sampling=SAMPLING))
    assert [node.id for node in result.attempts[0][0].accepted] == ["left"] and result.answer == 7
