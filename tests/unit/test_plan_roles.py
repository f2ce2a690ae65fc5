"""Roles in plans: nodes routed to a role by what their inputs contain and by cost, media kept as
content parts end to end on the role's own endpoint, auctions, and tool-using nodes."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

import pytest

from budgetflow.backends.scripted import FunctionBackend
from budgetflow.errors import ConfigError
from budgetflow.plans import PlanError, load_plan, plan_from_dict, run_plan
from budgetflow.plans.node_runner import PlanResources
from budgetflow.plans.routing import Bid
from budgetflow.types import AudioPart, ImagePart, Request, SamplingParams, TextPart

SAMPLING = SamplingParams(max_tokens=16, seed=3)
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)
ROLES = [
    {"name": "cheap", "cost": 0.1},
    {"name": "vision", "modalities": ["text", "image"], "cost": 2.0, "endpoint": "vision"},
    {"name": "big_vision", "modalities": ["text", "image", "audio"], "cost": 5.0, "endpoint": "vision"},
]


def _backend(name: str, seen: list[Request]) -> FunctionBackend:
    def reply(request: Request, index: int) -> str:
        seen.append(request)
        return f"Answer: {name}"

    return FunctionBackend(reply)


def test_a_node_goes_to_the_cheapest_role_that_takes_its_media_with_parts_intact(tmp_path: Path) -> None:
    (tmp_path / "cat.png").write_bytes(PNG)
    (tmp_path / "hello.wav").write_bytes(b"RIFF0000WAVE")
    (tmp_path / "plan.yaml").write_text(
        "roles: " + str(ROLES).replace("'", '"') + "\n"
        "nodes:\n"
        "  - {id: words, prompt: 'Say hi', role: auto}\n"
        "  - {id: look, prompt: 'What is in the picture?', role: auto, media: [{image: cat.png}]}\n"
        "  - {id: listen, prompt: 'What is said?', role: auto,\n"
        "     media: [{audio: hello.wav}, {image: cat.png}]}\n"
    )
    plan = load_plan(tmp_path / "plan.yaml")
    text_seen: list[Request] = []
    vision_seen: list[Request] = []
    resources = PlanResources(endpoints={"vision": _backend("vision", vision_seen)})
    result = asyncio.run(run_plan(plan, _backend("text", text_seen), sampling=SAMPLING, resources=resources))
    roles = {name: node.role for name, node in result.nodes.items()}
    assert roles == {"words": "cheap", "look": "vision", "listen": "big_vision"}
    assert "cheapest role taking image" in result.nodes["look"].route
    assert [r.messages[-1].text for r in text_seen] == ["Say hi"]  # only the text node used lane 0
    parts = {r.messages[-1].text: r.messages[-1].content for r in vision_seen}
    look = parts["What is in the picture?"]
    assert isinstance(look[0], TextPart) and isinstance(look[1], ImagePart)
    assert look[1].url == "data:image/png;base64," + base64.b64encode(PNG).decode()
    listen = parts["What is said?"]
    assert isinstance(listen[1], AudioPart) and listen[1].format == "wav" and isinstance(listen[2], ImagePart)


def test_video_frames_are_sent_as_images_and_unknown_media_are_refused(tmp_path: Path) -> None:
    (tmp_path / "f1.png").write_bytes(PNG)
    (tmp_path / "f2.png").write_bytes(PNG)
    plan = plan_from_dict(
        {
            "roles": ROLES,
            "nodes": [
                {
                    "id": "clip",
                    "prompt": "What moves?",
                    "role": "auto",
                    "media": [{"video": ["f1.png", "f2.png"]}],
                }
            ],
        },
        source=str(tmp_path / "plan.yaml"),
    )
    assert plan.nodes[0].media == ("image",) and len(plan.nodes[0].parts) == 2
    with pytest.raises(PlanError, match=r"media\[0\]: unknown medium 'smell'"):
        plan_from_dict({"nodes": [{"id": "a", "prompt": "x", "media": [{"smell": "rose"}]}]})
    with pytest.raises(PlanError, match=r"node 'a'.*role auto: no configured role takes video"):
        plan_from_dict(
            {"roles": ROLES, "nodes": [{"id": "a", "prompt": "x", "role": "auto", "media": ["video"]}]}
        )


def test_a_role_naming_an_unknown_endpoint_or_tool_is_refused_before_anything_runs() -> None:
    plan = plan_from_dict(
        {"roles": [{"name": "r", "endpoint": "gpu"}], "nodes": [{"id": "a", "prompt": "x", "role": "r"}]}
    )
    with pytest.raises(ConfigError, match="role 'r': no endpoint named 'gpu'"):
        asyncio.run(run_plan(plan, FunctionBackend(lambda r, i: "x"), sampling=SAMPLING))
    plan = plan_from_dict(
        {"roles": [{"name": "r", "tools": ["shell"]}], "nodes": [{"id": "a", "prompt": "x", "role": "r"}]}
    )
    with pytest.raises(ConfigError, match="role 'r': no tool named 'shell'"):
        asyncio.run(run_plan(plan, FunctionBackend(lambda r, i: "x"), sampling=SAMPLING))


def _auction_plan(**extra: Any) -> Any:
    roles = [
        {"name": "tiny", "cost": 0.1, "quality": 0.3},
        {"name": "small", "cost": 0.5, "quality": 0.7},
        {"name": "large", "cost": 3.0, "quality": 0.95},
    ]
    return plan_from_dict({"roles": roles, "nodes": [{"id": "a", "prompt": "x", "role": "auction"}], **extra})


def test_an_auction_picks_the_cheapest_sufficient_bid() -> None:
    result = asyncio.run(
        run_plan(_auction_plan(), FunctionBackend(lambda r, i: "Answer: 1"), sampling=SAMPLING)
    )
    assert result.nodes["a"].role == "small"  # tiny is cheaper but not good enough
    assert result.nodes["a"].route.startswith("auction: cheapest sufficient bid small")
    strict = _auction_plan(min_bid_value=0.9)
    result = asyncio.run(run_plan(strict, FunctionBackend(lambda r, i: "Answer: 1"), sampling=SAMPLING))
    assert result.nodes["a"].role == "large"
    # a role's own bidder replaces the default bid
    bidders = {"large": lambda role, node: Bid("large", 0.01, 0.99)}
    result = asyncio.run(
        run_plan(
            _auction_plan(),
            FunctionBackend(lambda r, i: "Answer: 1"),
            sampling=SAMPLING,
            resources=PlanResources(bidders=bidders),
        )
    )
    assert result.nodes["a"].role == "large"
    with pytest.raises(ConfigError, match=r"node 'a': no bid reaches value 0.99 \(best: large at 0.95\)"):
        asyncio.run(
            run_plan(_auction_plan(min_bid_value=0.99), FunctionBackend(lambda r, i: "x"), sampling=SAMPLING)
        )


def test_a_node_whose_role_has_tools_runs_the_tool_loop_with_its_budget_in_each_turn() -> None:
    seen: list[Request] = []

    def reply(request: Request, index: int) -> str:
        seen.append(request)
        if request.messages[-1].text.startswith("RESULT:"):
            return "Answer: " + request.messages[-1].text.split()[1]
        return "CALL calculator: 17 + 26 * 3"

    plan = plan_from_dict(
        {
            "budget_tokens": 3000,
            "roles": [{"name": "solver", "tools": ["calculator"], "max_tool_calls": 2}],
            "nodes": [
                {"id": "calc", "prompt": "What is 17 + 26 * 3?", "role": "solver", "output": "number"},
                {"id": "double", "prompt": "Double ${calc}", "output": "number"},
            ],
        }
    )
    backend = FunctionBackend(lambda r, i: "Answer: 190" if "Double" in r.messages[-1].text else reply(r, i))
    result = asyncio.run(run_plan(plan, backend, sampling=SAMPLING))
    assert result.nodes["calc"].value == 95 and result.nodes["calc"].samples == 2
    assert "1 tool calls" in result.nodes["calc"].reason
    assert all("[budget]" in r.messages[-1].text and "tool call" in r.messages[-1].text for r in seen)
    assert "tokens and 2 tool calls left" in seen[0].messages[-1].text
    assert result.outputs == {"double": 190} and result.spent.total_tokens <= 3000
