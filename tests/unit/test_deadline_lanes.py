"""The deadline planner over several backends ("lanes"): which question, which backend, how many."""

from __future__ import annotations

import asyncio
import json
import random
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from budgetflow.allocate import make_allocator
from budgetflow.allocate.deadline import LaneView, plan_next_draw
from budgetflow.answers import MatchGrader
from budgetflow.answers.voting import Evidence
from budgetflow.backends.base import Backend
from budgetflow.cli import app
from budgetflow.errors import ConfigError
from budgetflow.evaluate.allocated_lanes import run_planned
from budgetflow.evaluate.bank import BankQuestion, BankSample, write_bank
from budgetflow.evaluate.datasets import Dataset
from budgetflow.evaluate.runner import StrategyReport
from budgetflow.evaluate.simulate_lanes import Lane, simulate_lanes
from budgetflow.types import Completion, Message, Question, Request, Response, SamplingParams, Usage


def lane_bank(p_correct: float, seconds: float, size: int = 40, seed: int = 0) -> list[BankQuestion]:
    """Questions whose samples are right with `p_correct` and otherwise scatter over wrong answers."""
    rng = random.Random(seed)
    bank = []
    for index in range(size):
        samples = tuple(
            BankSample(answer="5", correct=True, completion_tokens=10, seconds=seconds)
            if rng.random() < p_correct
            else BankSample(
                answer=str(rng.randint(10, 13)), correct=False, completion_tokens=10, seconds=seconds
            )
            for _ in range(16)
        )
        bank.append(BankQuestion(id=f"q{index}", question="?", gold="5", greedy=None, samples=samples))
    return bank


def test_two_backends_in_parallel_beat_either_alone_within_the_deadline() -> None:
    fast = Lane(name="small", bank=lane_bank(0.4, 0.1, seed=1))
    slow = Lane(name="large", bank=lane_bank(0.6, 0.5, seed=2))
    allocator = make_allocator("deadline")
    deadline, budget = 12.0, 8 * 40

    def run(*lanes: Lane) -> float:
        result = simulate_lanes(
            list(lanes), allocator, budget_samples=budget, budget_seconds=deadline, seeds=5
        )
        assert result.seconds <= deadline + 1e-9
        assert result.samples_per_question <= 8 + 1e-9
        return result.accuracy

    both = simulate_lanes([fast, slow], allocator, budget_samples=budget, budget_seconds=deadline, seeds=5)
    assert both.samples_by_lane["small"] > 0 and both.samples_by_lane["large"] > 0
    assert both.accuracy > max(run(fast), run(slow))


def test_batches_pay_when_each_request_has_a_fixed_cost() -> None:
    lane = Lane(name="http", bank=lane_bank(0.5, 0.05), request_seconds=1.0)
    allocator = make_allocator("deadline")

    def run(max_batch: int) -> tuple[float, float]:
        result = simulate_lanes(
            [lane], allocator, budget_samples=8 * 40, budget_seconds=60.0, seeds=4, max_batch=max_batch
        )
        return result.accuracy, result.samples_per_question

    batched, single = run(8), run(1)
    assert batched[1] > 2 * single[1]  # one request carries several samples
    assert batched[0] > single[0]


def test_the_plan_respects_both_limits() -> None:
    allocator = make_allocator("deadline")
    contested = Evidence(answers=["5", "6"])
    settled = Evidence(answers=["5"] * 6)
    lanes = [LaneView(seconds_left=1.0)]
    lanes[0].observe(0, [0.3])
    lanes[0].observe(1, [0.3])
    plan = plan_next_draw([settled, contested], lanes, allocator=allocator, samples_left=10)
    assert plan is not None and plan.question == 1 and plan.n * 0.3 <= 1.0
    assert plan_next_draw([contested], lanes, allocator=allocator, samples_left=0) is None
    no_time = [LaneView(seconds_left=0.2)]
    no_time[0].observe(0, [0.3])
    assert plan_next_draw([contested], no_time, allocator=allocator, samples_left=10) is None


def test_lanes_must_hold_the_same_questions() -> None:
    with pytest.raises(ConfigError, match="same questions"):
        simulate_lanes(
            [
                Lane(name="a", bank=lane_bank(0.5, 0.1, size=3)),
                Lane(name="b", bank=lane_bank(0.5, 0.1, size=4)),
            ],
            make_allocator("deadline"),
            budget_samples=10,
            budget_seconds=5.0,
        )


def test_bank_simulate_cli_takes_one_bank_per_backend(tmp_path: Path) -> None:
    small, large = tmp_path / "small.jsonl", tmp_path / "large.jsonl"
    write_bank(small, lane_bank(0.4, 0.1, seed=1))
    write_bank(large, lane_bank(0.6, 0.5, seed=2))
    result = CliRunner().invoke(
        app,
        ["bank", "simulate", "--bank", str(small), "--bank", str(large), "--allocator", "deadline",
         "--budget-samples", "320", "--budget-seconds", "12", "--seeds", "2"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["seconds"] <= 12 and set(summary["samples_by_lane"]) == {"small", "large"}
    assert {"accuracy", "tokens", "oracle_accuracy", "uniform_accuracy"} <= set(summary)
    refused = CliRunner().invoke(
        app,
        ["bank", "simulate", "--bank", str(small), "--bank", str(large), "--allocator", "online",
         "--budget-samples", "320"],
    )  # fmt: skip
    assert refused.exit_code == 2 and "deadline" in refused.output


def test_greedy_answers_are_planned_like_samples_and_never_overrun_the_deadline() -> None:
    def with_greedy(seconds: float) -> list[BankQuestion]:
        greedy = BankSample(answer="5", correct=True, completion_tokens=10, seconds=seconds)
        return [
            BankQuestion(id=q.id, question=q.question, gold=q.gold, greedy=greedy, samples=q.samples)
            for q in lane_bank(0.4, 0.1)
        ]

    allocator = make_allocator("deadline", use_greedy=True)

    def greedy_share(seconds: float) -> float:
        lanes = [Lane(name="l", bank=with_greedy(seconds))]
        result = simulate_lanes(lanes, allocator, budget_samples=320, budget_seconds=8.0, seeds=2)
        assert result.seconds <= 8.0 + 1e-9
        return result.accuracy

    # a cheap greedy answer (always right here) is taken nearly everywhere; an expensive one cannot
    # be afforded for every question within 8 s, and the planner buys samples instead of stalling
    assert greedy_share(0.05) >= 0.9
    assert 0.3 < greedy_share(2.0) < 0.9


class _Delayed(Backend):
    """Answers after `delay` seconds per request: `answer` for every sample."""

    def __init__(self, name: str, delay: float, answer: str) -> None:
        self.name, self.delay, self.answer = name, delay, answer
        self.requests: list[Request] = []

    async def complete(self, request: Request) -> Response:
        self.requests.append(request)
        await asyncio.sleep(self.delay)
        completion = Completion(text=f"Answer: {self.answer}", completion_tokens=2)
        completions = tuple(completion for _ in range(request.n))
        return Response(completions=completions, usage=Usage(3, 2 * request.n))


def _live_dataset(size: int) -> Dataset:
    questions = tuple(
        Question(id=f"q{i}", text="?", gold="5", messages=(Message("user", f"question {i}"),))
        for i in range(size)
    )
    return Dataset(name="live", questions=questions, grader=MatchGrader())


def test_live_planner_uses_every_backend_and_stays_within_the_sample_budget() -> None:
    fast, slow = _Delayed("fast", 0.001, "5"), _Delayed("slow", 0.01, "5")
    report = asyncio.run(
        run_planned(
            _live_dataset(6),
            [fast, slow],
            make_allocator("deadline", use_greedy=True),
            budget_samples=18,
            deadline_seconds=30.0,
            sampling=SamplingParams(seed=1, max_tokens=8),
        )
    )
    assert fast.requests and slow.requests  # both lanes were planned for
    assert sum(r.samples for r in report.results) <= 18
    assert all(r.answer == "5" for r in report.results)
    assert report.reserved_at_end.calls == 0
    assert sum(r.n for r in fast.requests + slow.requests) == sum(r.samples for r in report.results)


def test_live_planner_cancels_a_hung_backend_at_the_deadline() -> None:
    working, hung = _Delayed("working", 0.001, "5"), _Delayed("hung", 60.0, "9")

    async def run() -> tuple[StrategyReport, float]:
        started = time.perf_counter()
        report = await run_planned(
            _live_dataset(4),
            [working, hung],
            make_allocator("deadline"),
            budget_samples=40,
            deadline_seconds=1.0,
            sampling=SamplingParams(seed=1, max_tokens=8),
        )
        return report, time.perf_counter() - started

    report, seconds = asyncio.run(run())
    assert hung.requests and seconds < 10.0  # the 60 s request was cancelled, not awaited
    assert all(r.answer == "5" for r in report.results)  # answers from the working lane
    assert report.reserved_at_end.calls == 0


def test_eval_cli_plans_over_several_backends(stub_url: str, tmp_path: Path) -> None:
    output = tmp_path / "out.json"
    result = CliRunner().invoke(
        app,
        ["eval", "--backend", "openai", "--base-url", stub_url, "--model", "stub", "--dataset", "chain_sum",
         "--limit", "3", "--allocator", "deadline", "--greedy-evidence", "--deadline-seconds", "30",
         "--budget-samples", "9", "--lane", f"{stub_url}=stub-b", "--output", str(output)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(output.read_text())["reports"][0]
    assert report["strategy"] == "alloc:deadline[2 backends]@9"
    assert sum(q["samples"] for q in report["results"]) <= 9
    assert all(q["answer"] == "7" for q in report["results"])
    refused = CliRunner().invoke(
        app, ["eval", "--allocator", "online", "--budget-samples", "9", "--lane", f"{stub_url}=m"]
    )
    assert refused.exit_code == 2 and "need the deadline allocator (--allocator deadline)" in " ".join(
        refused.output.split()
    )
