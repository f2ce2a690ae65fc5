"""The examples of plans, tools and the planner on the real embedded model (structure checked,
not accuracy: SmolLM2-135M is tiny)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from budgetflow.events import Event, EventStream, UnitRequested
from budgetflow.plans import load_plan, run_plan
from budgetflow.runtime.endpoints import EndpointSpec, open_backend
from budgetflow.testing.scripts import load_script
from budgetflow.types import SamplingParams

pytestmark = pytest.mark.integration
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SAMPLING = SamplingParams(temperature=0.5, max_tokens=32, seed=0)


async def _run(name: str, events: EventStream | None = None) -> object:
    async with open_backend(EndpointSpec(kind="embedded")) as backend:
        return await run_plan(load_plan(EXAMPLES / name), backend, sampling=SAMPLING, events=events)


def test_the_map_reduce_example_fans_out_and_votes_per_item() -> None:
    result = asyncio.run(_run("map_reduce.yaml"))
    nodes = result.nodes  # type: ignore[attr-defined]
    assert all(node.status == "ok" for node in nodes.values())
    assert nodes["solve"].samples == 20 and len(nodes["solve"].value) == 4  # 4 items x vote@5
    assert nodes["agree"].reason == "4 items, vote"
    assert result.spent.total_tokens <= 8000  # type: ignore[attr-defined]


def test_the_calculator_example_shows_the_budget_left_every_turn() -> None:
    events = EventStream("calculator")
    seen: list[Event] = []
    events.subscribe(seen.append)
    result = asyncio.run(_run("calculator.yaml", events))
    asked = [event for event in seen if isinstance(event, UnitRequested)]
    assert asked and all("[budget]" in event.messages[-1].text for event in asked)
    assert "CALL <tool>: <input>" in asked[0].messages[0].text
    assert result.nodes["product"].status in ("ok", "failed")  # type: ignore[attr-defined]
    assert result.spent.total_tokens <= 3000  # type: ignore[attr-defined]


def test_the_planner_example_streams_a_plan_that_runs() -> None:
    module = load_script(EXAMPLES / "planner_task.py")
    result = asyncio.run(module.plan_and_run("What is (2 + 3) * (4 + 1)?"))
    written, plan = result.attempts[0]
    assert written.accepted and written.streamed  # nodes went to the plan while it streamed
    assert all(plan.nodes[node.id].status in ("ok", "failed") for node in written.accepted)
    assert result.spent.total_tokens <= 4000
