"""Agent tools and the tool-calling loop: a safe calculator, a Python runner with time, memory and
network limits, BM25 document search, tool-call budgets, and the budget line every turn shows."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from budgetflow.backends.scripted import FunctionBackend
from budgetflow.budget import Budget
from budgetflow.events import Event, EventStream, ToolCalled
from budgetflow.runtime.context import RunContext
from budgetflow.tools import AgentOptions, Calculator, DocumentSearch, PythonRunner, ToolSpec, run_agent
from budgetflow.types import Completion, Message, Request, SamplingParams

SAMPLING = SamplingParams(max_tokens=32, seed=1)


# ---- calculator --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("17 + 26 * 3", "95"),
        ("(17 + 26) * 3 / 2", "64.5"),
        ("2 ^ 10", "1024"),
        ("sqrt(16)", "4"),
        ("7 // 2", "3"),
    ],
)
def test_the_calculator_evaluates_arithmetic(expression: str, expected: str) -> None:
    assert Calculator().evaluate(expression) == expected


@pytest.mark.parametrize(
    "expression",
    [
        "__import__('os').system('true')",
        "open('/etc/passwd').read()",
        "().__class__",
        "9 ** 9 ** 9",
        "1 / 0",
        "'a' * 3",
    ],
)
def test_the_calculator_refuses_anything_but_arithmetic(expression: str) -> None:
    assert Calculator().evaluate(expression).startswith("error:")


# ---- python runner -----------------------------------------------------------------------------


def test_the_python_runner_returns_what_the_program_prints() -> None:
    assert asyncio.run(PythonRunner().execute("print(sum(range(10)))")).strip() == "45"


def test_the_python_runner_stops_a_program_at_its_time_limit() -> None:
    runner = PythonRunner(timeout_seconds=1.0, cpu_seconds=10)
    result = asyncio.run(runner.execute("import time\nwhile True: time.sleep(0.01)"))
    assert result.startswith("error:") and "limit" in result


def test_the_python_runner_stops_a_program_at_its_cpu_limit() -> None:
    runner = PythonRunner(timeout_seconds=30.0, cpu_seconds=1)
    result = asyncio.run(runner.execute("while True: pass"))
    assert result.startswith("error:") and "CPU limit" in result


def test_the_python_runner_refuses_memory_beyond_its_limit() -> None:
    runner = PythonRunner(memory_bytes=256 * 1024 * 1024)
    result = asyncio.run(runner.execute("x = bytearray(1024 * 1024 * 1024)\nprint('allocated')"))
    assert result.startswith("error:") and "MemoryError" in result


@pytest.mark.parametrize(
    "code",
    [
        "import socket\nsocket.create_connection(('127.0.0.1', 9))",
        "import urllib.request\nurllib.request.urlopen('http://127.0.0.1:9')",
        "import subprocess\nsubprocess.run(['true'])",
        "import os\nos.system('true')",
    ],
    ids=["socket", "urllib", "subprocess", "os.system"],
)
def test_the_python_runner_has_no_network_and_no_subprocesses(code: str) -> None:
    result = asyncio.run(PythonRunner().execute(code))
    assert result.startswith("error:") and "not allowed in the python tool" in result


# ---- document search ---------------------------------------------------------------------------


def test_document_search_ranks_passages_by_bm25() -> None:
    search = DocumentSearch.from_texts(
        {
            "tides.md": "The tides are caused by the gravity of the moon and the sun.",
            "bread.txt": "Bread rises because yeast makes carbon dioxide.",
            "moon.txt": "The moon orbits the earth every 27 days.",
        },
        top_k=2,
    )
    found = json.loads(asyncio.run(search.run({"query": "why does bread rise with yeast"})))
    assert found[0]["source"] == "bread.txt"
    assert [p.source for p in search.search("moon gravity tides")] == ["tides.md", "moon.txt"]


# ---- the tool loop -----------------------------------------------------------------------------


def _context(budget_tokens: int | None = None, events: EventStream | None = None) -> tuple[RunContext, Any]:
    seen: list[Request] = []

    def reply(request: Request, index: int) -> str:
        seen.append(request)
        last = request.messages[-1].text
        if "RESULT: 95" in last:
            return "The calculator says 95. Answer: 95"
        return "I will compute it.\nCALL calculator: 17 + 26 * 3\nRESULT: 1000 (made up)"

    budget = Budget(total_tokens=budget_tokens) if budget_tokens is not None else None
    return RunContext(FunctionBackend(reply), budget=budget, events=events), seen


def test_the_text_protocol_calls_the_calculator_and_answers_with_its_result() -> None:
    events = EventStream("agent")
    kept: list[Event] = []
    events.subscribe(kept.append)
    context, seen = _context(budget_tokens=2_000, events=events)
    unit = context.unit("q", index=0, kind="node")
    task = (Message("user", "What is 17 + 26 * 3?"),)
    outcome = asyncio.run(run_agent(unit, task, AgentOptions(tools=(Calculator(),)), sampling=SAMPLING))
    assert outcome.answer == "95" and outcome.tool_calls == 1 and outcome.turns == 2
    assert [use.result for use in outcome.tool_uses] == ["95"]
    # the made-up RESULT after the call line never reaches the next turn
    assert "made up" not in seen[1].messages[-2].text and seen[1].messages[-1].text.startswith("RESULT: 95")
    assert "CALL <tool>: <input>" in seen[0].messages[0].text and "calculator" in seen[0].messages[0].text
    # each turn shows the budget left, and it shrinks as the unit spends
    assert outcome.budget_lines[0] == "[budget] 2,000 tokens and 4 tool calls left."
    assert outcome.budget_lines[1].endswith("3 tool calls left.")
    assert seen[0].messages[-1].text.endswith(outcome.budget_lines[0])
    assert seen[1].messages[-1].text.endswith(outcome.budget_lines[1])
    left = [int(line.split()[1].replace(",", "")) for line in outcome.budget_lines]
    second_turn = sum(len(m.text.split()) for m in seen[1].messages) + len(outcome.replies[1].split())
    assert left[1] == 2_000 - (unit.spent.total_tokens - second_turn) < left[0]
    called = [event for event in kept if isinstance(event, ToolCalled)]
    assert [(e.tool, e.result, e.unit_id) for e in called] == [("calculator", "95", "q")]


class _Counter:
    """A tool that counts its calls."""

    def __init__(self) -> None:
        self.spec = ToolSpec("count", "Counts.", {"type": "object", "properties": {}}, main_argument="input")
        self.runs = 0

    async def run(self, arguments: Any) -> str:
        self.runs += 1
        return str(self.runs)


def test_a_tool_call_beyond_the_budget_is_refused_and_the_model_told_to_answer() -> None:
    seen: list[Request] = []

    def reply(request: Request, index: int) -> str:
        seen.append(request)
        if "no tool calls left" in request.messages[-1].text:
            return "Answer: 2"
        return "CALL count: again"

    counter = _Counter()
    context = RunContext(FunctionBackend(reply))
    unit = context.unit("q", index=0, kind="node")
    options = AgentOptions(tools=(counter,), max_tool_calls=2, max_turns=6)
    outcome = asyncio.run(run_agent(unit, (Message("user", "count"),), options, sampling=SAMPLING))
    assert counter.runs == 2 and outcome.tool_calls == 2
    assert [use.refused for use in outcome.tool_uses] == [False, False, True]
    assert outcome.answer == "2" and outcome.turns == 4
    assert [line.split(" and ")[1] for line in outcome.budget_lines] == [
        "2 tool calls left.",
        "1 tool call left.",
        "0 tool calls left.",
        "0 tool calls left.",
    ]


def test_the_native_protocol_sends_tools_and_reads_tool_calls() -> None:
    seen: list[Request] = []

    def reply(request: Request, index: int) -> Completion:
        seen.append(request)
        if request.messages[-1].role == "tool":
            return Completion(text="Answer: 95", completion_tokens=2)
        call = [
            {
                "id": "c1",
                "type": "function",
                "function": {"name": "calculator", "arguments": '{"expression": "17 + 26 * 3"}'},
            }
        ]
        return Completion(
            text="",
            finish_reason="tool_calls",
            completion_tokens=5,
            fields=(("tool_calls", json.dumps(call)),),
        )

    unit = RunContext(FunctionBackend(reply)).unit("q", index=0, kind="node")
    options = AgentOptions(tools=(Calculator(),), protocol="native")
    outcome = asyncio.run(
        run_agent(unit, (Message("user", "What is 17 + 26 * 3?"),), options, sampling=SAMPLING)
    )
    assert outcome.answer == "95" and outcome.tool_calls == 1
    tools = json.loads(dict(seen[0].passthrough)["tools"])
    assert tools[0]["function"]["name"] == "calculator"
    assistant, tool = seen[1].messages[-2], seen[1].messages[-1]
    assert dict(assistant.fields)["tool_calls"] and json.loads(dict(tool.fields)["tool_call_id"]) == "c1"
    assert tool.text.startswith("95")


def test_a_turn_the_budget_refuses_starves_the_agent_without_passing_the_cap() -> None:
    context, _ = _context(budget_tokens=60)
    unit = context.unit("q", index=0, kind="node")
    task = (Message("user", "What is 17 + 26 * 3?"),)
    outcome = asyncio.run(run_agent(unit, task, AgentOptions(tools=(Calculator(),)), sampling=SAMPLING))
    assert outcome.budget_exhausted and "budget exhausted" in outcome.reason
    assert context.ledger.spent.total_tokens <= 60
