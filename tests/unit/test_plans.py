"""Plans: validation names the node and the problem; the dataflow scheduler starts each node
when its inputs are ready, fans out at run time, cancels what a quorum no longer needs, and
returns partial results after a failure — every node a unit of the execution core."""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path
from typing import Any

import pytest

from budgetflow.backends.scripted import FunctionBackend
from budgetflow.errors import ServerError
from budgetflow.plans import PlanError, load_plan, plan_from_dict, run_plan
from budgetflow.plans.topology import choose_topology
from budgetflow.runtime.context import EndpointLimits
from budgetflow.types import Request, SamplingParams

SAMPLING = SamplingParams(max_tokens=16, seed=3)


def _plan(*nodes: dict[str, Any], **fields: Any) -> Any:
    return plan_from_dict({"nodes": list(nodes), **fields})


def _prompt(request: Request) -> str:
    return request.messages[-1].text


# ---- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("nodes", "extra", "message"),
    [
        (
            [{"id": "a", "prompt": "x"}, {"id": "b", "prompt": "${a} and ${nope}"}],
            {},
            r"node 'b'.*\$\{nope\} refers to 'nope'",
        ),
        (
            [{"id": "a", "prompt": "${b}"}, {"id": "b", "prompt": "${a}"}],
            {},
            r"cycle: (a -> b -> a|b -> a -> b)",
        ),
        (
            [{"id": "a", "prompt": "x", "output": "number"}, {"id": "b", "prompt": "${item}", "map": "a"}],
            {},
            r"node 'b'.*map needs a list, but 'a' outputs number",
        ),
        ([{"id": "a", "prompt": "x", "role": "vision"}], {}, r"node 'a'.*no configured role is 'vision'"),
        (
            [{"id": "a", "prompt": "x", "media": ["image"]}],
            {},
            r"node 'a'.*role 'default' takes text, not image",
        ),
        (
            [
                {"id": "a", "prompt": "x", "limits": {"budget_share": 0.7}},
                {"id": "b", "prompt": "${a}", "limits": {"budget_share": 0.5}},
            ],
            {"budget_tokens": 100},
            r"budget shares add up to 1.2",
        ),
        (
            [{"id": "a", "prompt": "x"}, {"id": "b", "prompt": "y"}],
            {"outputs": ["a"]},
            r"node 'b'.*reaches none of the plan's outputs",
        ),
        (
            [
                {"id": "a", "prompt": "x"},
                {"id": "j", "prompt": "${fan_in}", "after": ["a"], "fan_in": "quorum(2)"},
            ],
            {},
            r"node 'j'.*quorum\(2\) needs at least 2 sources",
        ),
        (
            [{"id": "a", "prompt": "x"}, {"id": "j", "prompt": "${a}", "fan_in": "first"}],
            {},
            r"node 'j'.*refer to the winning output as \$\{fan_in\}",
        ),
        ([{"id": "a", "prompt": "${item}"}], {}, r"node 'a'.*\$\{item\} is only defined in a map node"),
        ([{"id": "a", "prompt": "x", "strategy": "vote@zero"}], {}, r"node 'a'.*strategy 'vote@zero'"),
        ([{"id": "a", "prompt": "x"}, {"id": "a", "prompt": "y"}], {}, r"node 'a'.*used by another node"),
    ],
    ids=[
        "unknown-ref",
        "cycle",
        "map-type",
        "role",
        "modality",
        "shares",
        "unused",
        "quorum",
        "fan-in-ref",
        "item",
        "strategy",
        "duplicate",
    ],
)
def test_a_bad_plan_is_refused_naming_the_node_and_the_problem(
    nodes: list[dict[str, Any]], extra: dict[str, Any], message: str
) -> None:
    with pytest.raises(PlanError, match=message):
        _plan(*nodes, **extra)


def test_yaml_mistakes_name_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text(
        textwrap.dedent("""\
        nodes:
          - id: a
            prompt: "What is 2 + 2?"
          - id: b
            promt: "typo"
        """)
    )
    with pytest.raises(PlanError, match=r"plan.yaml line 4: node 'b': unknown field 'promt'"):
        load_plan(path)
    path.write_text("nodes:\n  - id: a\n    prompt: [unclosed\n")
    with pytest.raises(PlanError, match=r"plan.yaml line \d+: not valid YAML"):
        load_plan(path)
    path.write_text(
        textwrap.dedent("""\
        nodes:
          - id: a
            prompt: "x"
          - id: b
            prompt: "${zzz}"
        """)
    )
    with pytest.raises(PlanError, match=r"node 'b' \(line 4\): \$\{zzz\}"):
        load_plan(path)


# ---- scheduling ------------------------------------------------------------------------------


def test_every_reference_in_an_argument_is_resolved() -> None:
    seen: list[str] = []

    def reply(request: Request, index: int) -> str:
        seen.append(_prompt(request))
        return {"one": "Answer: 2", "two": "Answer: 5"}.get(_prompt(request), "Answer: 7")

    plan = _plan(
        {"id": "a", "prompt": "one", "output": "number"},
        {"id": "b", "prompt": "two", "output": "number"},
        {"id": "c", "prompt": "${a} + ${b} = ?", "output": "number"},
    )
    result = asyncio.run(run_plan(plan, FunctionBackend(reply), sampling=SAMPLING))
    assert "2 + 5 = ?" in seen and result.outputs == {"c": 7}


def test_a_slow_branch_never_delays_an_unrelated_fast_one() -> None:
    """langgraph#6320: `after_fast` must start before `slow` finishes. `slow` finishes only once
    `after_fast` has started, so a scheduler that waits for the whole layer never ends."""
    after_fast_started = asyncio.Event()
    order: list[str] = []

    async def reply(request: Request, index: int) -> str:
        prompt = _prompt(request)
        order.append(f"start {prompt}")
        if prompt == "slow":
            await after_fast_started.wait()
        if prompt == "after fast":
            after_fast_started.set()
        order.append(f"end {prompt}")
        return "done"

    plan = _plan(
        {"id": "slow", "prompt": "slow"},
        {"id": "fast", "prompt": "fast"},
        {"id": "after_fast", "prompt": "after fast", "after": ["fast"]},
        {"id": "join", "prompt": "${slow} ${after_fast}"},
    )

    async def main() -> Any:
        return await asyncio.wait_for(run_plan(plan, FunctionBackend(reply), concurrency=4), 30)

    result = asyncio.run(main())
    assert all(node.status == "ok" for node in result.nodes.values())
    assert order.index("start after fast") < order.index("end slow")


def _start_order(plan: Any) -> list[str]:
    """The prompts in the order their calls started, one call at a time."""
    started: list[str] = []

    async def reply(request: Request, index: int) -> str:
        started.append(_prompt(request))
        return "done"

    result = asyncio.run(run_plan(plan, FunctionBackend(reply), sampling=SAMPLING, concurrency=1))
    assert all(node.status == "ok" for node in result.nodes.values())
    return started


def test_the_ready_node_with_the_longest_remaining_path_starts_first() -> None:
    """Equal limits: the path counts nodes. `lone` comes first in the plan, but the chain's head
    has two nodes behind it, so with one slot it goes first, then `middle`; `tail` and `lone`
    tie (one node each) and the one ready first goes first."""
    plan = _plan(
        {"id": "lone", "prompt": "lone"},
        {"id": "head", "prompt": "head"},
        {"id": "middle", "prompt": "middle", "after": ["head"]},
        {"id": "tail", "prompt": "tail", "after": ["middle"]},
    )
    assert _start_order(plan) == ["head", "middle", "lone", "tail"]


def test_the_critical_path_weighs_each_node_by_the_tokens_it_may_decode() -> None:
    """A node allowed 2,000 tokens is a longer path than a chain of three allowed 16 each (the
    run's max_tokens): it starts first, where counting nodes would start the chain."""
    plan = _plan(
        {"id": "head", "prompt": "head"},
        {"id": "middle", "prompt": "middle", "after": ["head"]},
        {"id": "tail", "prompt": "tail", "after": ["middle"]},
        {"id": "long", "prompt": "long", "limits": {"max_tokens": 2000}},
    )
    assert _start_order(plan) == ["long", "head", "middle", "tail"]


def test_nested_fan_out_beyond_the_pool_neither_deadlocks_nor_drops_work() -> None:
    """Two maps of 9 items each, 2 units at a time, over an endpoint that takes 1 call at a
    time: every item runs (langgraph#3329 ran 16 of 21), and no limit is passed."""
    in_flight, most = 0, 0

    async def reply(request: Request, index: int) -> str:
        nonlocal in_flight, most
        prompt = _prompt(request)
        if prompt.startswith("list"):
            return "[1, 2, 3, 4, 5, 6, 7, 8, 9]"
        if not prompt.startswith("ten times"):
            return "done"
        in_flight += 1
        most = max(most, in_flight)
        await asyncio.sleep(0)
        in_flight -= 1
        return f"Answer: {int(prompt.split()[-1]) * 10}"

    plan = _plan(
        {"id": "xs", "prompt": "list xs", "output": "list"},
        {"id": "ys", "prompt": "list ys", "output": "list"},
        {"id": "tens", "prompt": "ten times ${item}", "map": "xs", "output": "number"},
        {"id": "more", "prompt": "ten times ${item}", "map": "ys", "output": "number"},
        {"id": "sum", "prompt": "${tens} ${more}"},
    )
    backend = FunctionBackend(reply)
    result = asyncio.run(
        run_plan(plan, backend, concurrency=2, limits=EndpointLimits(concurrency=1), sampling=SAMPLING)
    )
    assert result.nodes["tens"].value == [10, 20, 30, 40, 50, 60, 70, 80, 90]
    assert result.nodes["more"].value == result.nodes["tens"].value
    assert len(backend.requests) == 2 + 18 + 1 and most == 1


def test_a_quorum_cancels_the_sources_it_no_longer_needs_and_their_spend_stops() -> None:
    gate = asyncio.Event()  # never set: `c` generates until it is cancelled

    async def reply(request: Request, index: int) -> str:
        prompt = _prompt(request)
        if prompt == "c":
            await gate.wait()
        return "Answer: 42" if prompt != "use 42" else "Answer: 43"

    plan = _plan(
        {"id": "a", "prompt": "a", "output": "number"},
        {"id": "b", "prompt": "b", "output": "number"},
        {"id": "c", "prompt": "c", "output": "number"},
        {
            "id": "j",
            "prompt": "use ${fan_in}",
            "after": ["a", "b", "c"],
            "fan_in": "quorum(2)",
            "output": "number",
        },
        budget_tokens=10_000,
    )
    result = asyncio.run(asyncio.wait_for(run_plan(plan, FunctionBackend(reply), sampling=SAMPLING), 30))
    assert result.nodes["c"].status == "cancelled" and "quorum reached at 'j'" in result.nodes["c"].reason
    assert result.outputs == {"j": 43}
    assert result.nodes["c"].tokens > 0  # what the cancelled source had reserved is charged, not lost
    assert result.spent.total_tokens == sum(node.tokens for node in result.nodes.values())


def test_a_failed_node_fails_its_dependants_and_independent_branches_finish() -> None:
    def reply(request: Request, index: int) -> str:
        if _prompt(request) == "breaks":
            raise ServerError("HTTP 500 from the endpoint", status=500, backend="fake")
        return "Answer: 1"

    plan = _plan(
        {"id": "bad", "prompt": "breaks", "limits": {"retries": 1}},
        {"id": "after_bad", "prompt": "${bad}"},
        {"id": "good", "prompt": "fine", "output": "number"},
    )
    result = asyncio.run(run_plan(plan, FunctionBackend(reply), sampling=SAMPLING))
    assert result.nodes["bad"].status == "failed" and "after 2 attempts" in result.nodes["bad"].reason
    assert (
        result.nodes["after_bad"].status == "skipped" and "'bad' failed" in result.nodes["after_bad"].reason
    )
    assert result.outputs == {"good": 1} and sorted(result.failed) == ["after_bad", "bad"]
    assert not result.complete


def test_a_map_fans_out_over_a_list_known_only_at_run_time() -> None:
    def reply(request: Request, index: int) -> str:
        prompt = _prompt(request)
        if prompt == "numbers":
            return "The numbers are [2, 3, 4]."
        if prompt.startswith("square"):
            value = int(prompt.split()[-1])
            return f"Answer: {value * value}"
        return "Answer: " + str(sum(int(part) for part in prompt.strip("[]").split(",")))

    plan = _plan(
        {"id": "numbers", "prompt": "numbers", "output": "list"},
        {"id": "squares", "prompt": "square ${item}", "map": "numbers", "output": "number"},
        {"id": "total", "prompt": "${squares}", "output": "number"},
    )
    result = asyncio.run(run_plan(plan, FunctionBackend(reply), sampling=SAMPLING))
    assert result.nodes["squares"].value == [4, 9, 16] and result.outputs == {"total": 29}
    assert result.complete


def test_the_execution_limit_names_the_node_that_went_over() -> None:
    plan = _plan(
        {"id": "a", "prompt": "a"},
        {"id": "b", "prompt": "${a}"},
        {"id": "c", "prompt": "${b}"},
        max_executions=2,
    )
    result = asyncio.run(run_plan(plan, FunctionBackend(lambda request, index: "ok"), sampling=SAMPLING))
    assert result.nodes["c"].status == "failed"
    assert "executions of 'c' went over the plan's limit of 2" in result.nodes["c"].reason
    assert result.nodes["a"].status == result.nodes["b"].status == "ok"


def test_node_budget_shares_cap_each_node_and_the_plan_budget_holds() -> None:
    plan = _plan(
        {"id": "a", "prompt": "a", "strategy": "vote@4", "limits": {"budget_share": 0.25}},
        {"id": "b", "prompt": "${a}", "strategy": "vote@4"},
        budget_tokens=400,
    )
    reply = " ".join(["word"] * 12)
    result = asyncio.run(run_plan(plan, FunctionBackend(lambda request, index: reply), sampling=SAMPLING))
    assert result.nodes["a"].budget_tokens == 100 and result.nodes["a"].tokens <= 100
    assert result.spent.total_tokens <= 400


# ---- budget across nodes ---------------------------------------------------------------------


def _easy_and_hard(request: Request, index: int) -> str:
    """`easy` nodes always agree; `hard` answers by its seed's parity (samples disagree)."""
    if _prompt(request).startswith("hard"):
        return f"Answer: {(request.sampling.seed or 0) % 2 + 7}"
    return "Answer: 5"


def _allocated_plan(allocator: str, budget_tokens: int) -> Any:
    return _plan(
        {"id": "easy1", "prompt": "easy one", "strategy": "allocate", "output": "number"},
        {"id": "hard", "prompt": "hard one", "strategy": "allocate", "output": "number"},
        {"id": "easy2", "prompt": "easy two", "strategy": "allocate", "output": "number"},
        budget_tokens=budget_tokens,
        allocator={"name": allocator, "cap": 10},
    )


def test_the_allocator_moves_budget_from_settled_nodes_to_one_whose_samples_disagree() -> None:
    result = asyncio.run(
        run_plan(_allocated_plan("online", 3_000), FunctionBackend(_easy_and_hard), sampling=SAMPLING)
    )
    easy = [result.nodes["easy1"], result.nodes["easy2"]]
    hard = result.nodes["hard"]
    assert all("settled" in node.reason for node in easy) and all(node.samples <= 4 for node in easy)
    assert hard.samples > max(node.samples for node in easy)
    assert hard.tokens > sum(node.tokens for node in easy) / 2  # more than an equal share
    assert result.nodes["hard"].strategy == "allocate:online"
    assert result.spent.total_tokens <= 3_000


def test_a_uniform_allocator_gives_every_node_the_same_samples_and_the_budget_holds() -> None:
    result = asyncio.run(
        run_plan(_allocated_plan("uniform", 3_000), FunctionBackend(_easy_and_hard), sampling=SAMPLING)
    )
    assert {node.samples for node in result.nodes.values()} == {10}
    for allocator in ("uniform", "online"):  # a budget too small for the caps starves, never passes
        tight = asyncio.run(
            run_plan(_allocated_plan(allocator, 100), FunctionBackend(_easy_and_hard), sampling=SAMPLING)
        )
        assert tight.spent.total_tokens <= 100
        assert any("budget exhausted" in node.reason for node in tight.nodes.values())
        assert all(n.status == "ok" or "budget exhausted" in n.reason for n in tight.nodes.values())


def test_allocate_nodes_need_an_allocator_and_an_unknown_one_is_named() -> None:
    with pytest.raises(PlanError, match=r"node 'a'.*strategy allocate needs the plan's allocator"):
        _plan({"id": "a", "prompt": "x", "strategy": "allocate"})
    with pytest.raises(PlanError, match=r"allocator: unknown allocator 'onlin'; did you mean 'online'"):
        _plan({"id": "a", "prompt": "x", "strategy": "allocate"}, allocator="onlin")


def test_a_literal_list_feeds_a_map_once_and_makes_no_call() -> None:
    backend = FunctionBackend(lambda request, index: "Answer: " + str(len(_prompt(request))))
    plan = _plan(
        {"id": "words", "value": ["a", "bb", "ccc"], "output": "list"},
        {"id": "lengths", "prompt": "${item}", "map": "words", "output": "number"},
    )
    result = asyncio.run(run_plan(plan, backend, sampling=SAMPLING))
    assert result.outputs == {"lengths": [1, 2, 3]} and len(backend.requests) == 3
    assert result.nodes["words"].strategy == "literal" and result.nodes["words"].tokens == 0
    with pytest.raises(PlanError, match=r"node 'n'.*its value is str, but its output is number"):
        _plan({"id": "n", "value": "seven", "output": "number"})


# ---- topology, synthesis and consistency -----------------------------------------------------


@pytest.mark.parametrize(
    ("nodes", "kind", "reason"),
    [
        ([{"id": "a", "prompt": "x"}, {"id": "b", "prompt": "y"}], "parallel", "2 independent nodes"),
        (
            [{"id": "a", "prompt": "x"}, {"id": "b", "prompt": "${a}"}, {"id": "c", "prompt": "${b}"}],
            "sequential",
            "a chain of 3 nodes",
        ),
        (
            [
                {"id": "a", "prompt": "x"},
                {"id": "b", "prompt": "y"},
                {"id": "b2", "prompt": "${b}"},
                {"id": "merge", "prompt": "${a} ${b2}"},
            ],
            "hierarchical",
            "2 parallel branches merged by 'merge'",
        ),
        (
            [
                {"id": "a", "prompt": "x"},
                {"id": "b", "prompt": "${a}"},
                {"id": "c", "prompt": "${a}"},
                {"id": "d", "prompt": "${b} ${c}"},
                {"id": "e", "prompt": "${a} ${d}"},
            ],
            "hybrid",
            "depth 4, width 2, 2 merge points",
        ),
        (
            [{"id": "xs", "prompt": "x", "output": "list"}, {"id": "m", "prompt": "${item}", "map": "xs"}],
            "hybrid",
            "run-time maps",
        ),
    ],
    ids=["parallel", "sequential", "hierarchical", "hybrid", "map"],
)
def test_the_topology_is_chosen_from_the_plans_shape(
    nodes: list[dict[str, Any]], kind: str, reason: str
) -> None:
    topology = choose_topology(_plan(*nodes))
    assert topology.kind == kind and reason in topology.reason


def test_topology_routing_is_linear_in_the_size_of_the_plan() -> None:
    """A 20,000-node chain (deeper than Python's recursion limit) is routed and validated."""
    nodes = [{"id": "n0", "prompt": "x"}] + [
        {"id": f"n{i}", "prompt": f"${{n{i - 1}}}"} for i in range(1, 20_000)
    ]
    topology = choose_topology(_plan(*nodes))
    assert topology.kind == "sequential" and topology.depth == 20_000


def test_a_synthesize_reducer_makes_one_more_call_over_every_item() -> None:
    seen: list[str] = []

    def reply(request: Request, index: int) -> str:
        seen.append(_prompt(request))
        if _prompt(request).startswith("Combine"):
            return "Answer: 14"
        return f"Answer: {int(_prompt(request).split()[-1]) * 2}"

    plan = _plan(
        {"id": "xs", "value": [3, 4], "output": "list"},
        {
            "id": "double",
            "prompt": "double ${item}",
            "map": "xs",
            "reduce": "synthesize",
            "synthesis": "Combine by adding:\n${results}",
            "output": "number",
        },
    )
    result = asyncio.run(run_plan(plan, FunctionBackend(reply), sampling=SAMPLING))
    assert seen[-1] == "Combine by adding:\n1. 6\n2. 8"
    assert result.outputs == {"double": 14} and "2 items synthesised" in result.nodes["double"].reason


def _solvers_plan(**extra: Any) -> Any:
    return _plan(
        {"id": "s1", "prompt": "solve one", "output": "number"},
        {"id": "s2", "prompt": "solve two", "output": "number"},
        {"id": "s3", "prompt": "solve three", "output": "number"},
        {"id": "final", "prompt": "${s1} ${s2} ${s3}", "output": "number", **extra},
    )


def test_a_consistency_check_reruns_the_sources_that_disagree_at_most_r_times() -> None:
    calls: list[str] = []

    def reply(request: Request, index: int) -> str:
        prompt = _prompt(request)
        calls.append(prompt)
        if prompt == "solve three":  # wrong the first time, right when run again
            return "Answer: 9" if calls.count(prompt) == 1 else "Answer: 4"
        return "Answer: 4" if prompt.startswith("solve") else "Answer: " + prompt.split()[0]

    result = asyncio.run(
        run_plan(_solvers_plan(consistency={"min_agreement": 0.9, "redispatch": 2}), FunctionBackend(reply))
    )
    assert calls.count("solve three") == 2 and calls.count("solve one") == 1  # only the dissenter re-ran
    assert result.nodes["s3"].value == 4 and result.nodes["s3"].executions == 2
    assert "sources agree 100% after 1 re-runs" in result.nodes["final"].reason
    assert result.topology is not None and result.topology.kind == "hierarchical"

    stubborn = FunctionBackend(
        lambda request, index: "Answer: 9" if _prompt(request) == "solve three" else "Answer: 4"
    )
    capped = asyncio.run(
        run_plan(_solvers_plan(consistency={"min_agreement": 0.9, "redispatch": 2}), stubborn)
    )
    assert sum(_prompt(r) == "solve three" for r in stubborn.requests) == 3  # 1 + R re-runs, no more
    assert "after 2 re-runs, merged as is" in capped.nodes["final"].reason


def test_tight_coupling_checks_the_synthesiser_of_a_hierarchical_plan_and_loose_does_not() -> None:
    assert choose_topology(_solvers_plan()).checks == ()
    tight = plan_from_dict({**_solvers_dict(), "coupling": "tight"})
    assert [name for name, _ in choose_topology(tight).checks] == ["final"]
    with pytest.raises(
        PlanError, match=r"node 'final'.*consistency re-runs its sources.*xs cannot be re-run"
    ):
        _plan(
            {"id": "xs", "value": [1], "output": "list"},
            {"id": "s", "prompt": "y"},
            {"id": "final", "prompt": "${xs} ${s}", "consistency": True},
        )


def _solvers_dict() -> dict[str, Any]:
    return {
        "nodes": [
            {"id": "s1", "prompt": "solve one", "output": "number"},
            {"id": "s2", "prompt": "solve two", "output": "number"},
            {"id": "final", "prompt": "${s1} ${s2}", "output": "number"},
        ]
    }
