"""best_of_n, refine, synthesize, outline, beam, prune and nothink on scripted backends."""

from __future__ import annotations

import asyncio
import re

import pytest
from aiohttp import web

from budgetflow import run_strategy
from budgetflow.backends.scripted import FunctionBackend
from budgetflow.errors import MalformedReply
from budgetflow.strategies import Draw, Sample
from budgetflow.strategies.best_of_n import BestOfN, weighted_majority
from budgetflow.strategies.nothink import NoThink
from budgetflow.strategies.outline import Outline
from budgetflow.strategies.parse import parse_strategy
from budgetflow.strategies.prune import Prune
from budgetflow.strategies.revision import Refine, Synthesize
from budgetflow.strategies.search import Beam, allocate_widths, diverse_top
from budgetflow.strategies.verifiers import FunctionVerifier, JudgeVerifier, RewardEndpointVerifier
from budgetflow.strategies.vote import Vote
from budgetflow.types import Completion, Message, Request, SamplingParams

QUESTION = (Message("user", "What is 2 + 2?"),)


def _run(strategy: object, backend: FunctionBackend, **sampling: object) -> object:
    return asyncio.run(
        run_strategy(strategy, backend, QUESTION, sampling=SamplingParams(seed=1, **sampling))  # type: ignore[arg-type]
    )


def test_best_of_n_takes_the_highest_score_or_the_weighted_vote() -> None:
    answers = iter(["Answer: 3", "Answer: 4", "Answer: 5", "Answer: 3"])
    backend = FunctionBackend(lambda request, index: next(answers))
    verifier = FunctionVerifier(lambda messages, completion: 0.9 if "4" in completion else 0.4)
    outcome = _run(BestOfN(n=4, verifier=verifier), backend)
    assert outcome.answer == "4" and all(s.score is not None for s in outcome.samples)  # type: ignore[attr-defined]
    samples = [
        Sample(text="", answer=a, completion_tokens=1, score=s)
        for a, s in [("3", 0.4), ("4", 0.9), ("3", 0.6)]
    ]
    assert weighted_majority(samples) == ("3", pytest.approx(1.0))


def test_judge_verifier_scores_the_share_of_yes_on_the_budgeted_backend() -> None:
    backend = FunctionBackend(lambda request, index: "yes" if index < 2 else "no")
    score = asyncio.run(JudgeVerifier(samples=3).score(QUESTION, "2 + 2 = 4. Answer: 4", backend=backend))
    assert score == pytest.approx(2 / 3)
    assert "2 + 2 = 4" in backend.requests[0].messages[0].text


def test_reward_endpoint_verifier_reads_scores_and_rejects_bad_replies() -> None:
    async def body() -> tuple[float, str]:
        async def handle(request: web.Request) -> web.Response:
            payload = await request.json()
            if payload["completion"] == "bad":
                return web.Response(text="{}")
            return web.json_response({"score": len(payload["completion"]) / 10})

        app = web.Application()
        app.router.add_post("/score", handle)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/score"
        verifier = RewardEndpointVerifier(url)
        backend = FunctionBackend(lambda r, i: "")
        try:
            value = await verifier.score(QUESTION, "12345", backend=backend)
            with pytest.raises(MalformedReply, match="expected"):
                await verifier.score(QUESTION, "bad", backend=backend)
        finally:
            await runner.cleanup()
        return value, url

    value, _ = asyncio.run(body())
    assert value == 0.5


def test_refine_critiques_its_own_latest_answer() -> None:
    backend = FunctionBackend(lambda request, index: f"Answer: {len(request.messages)}")
    outcome = _run(Refine(rounds=2), backend)
    assert [s.tag for s in outcome.samples] == ["draft", "revision1", "revision2"]  # type: ignore[attr-defined]
    last = backend.requests[-1].messages
    assert last[-2] == Message("assistant", "Answer: 3") and "Check the solution" in last[-1].text
    assert outcome.answer == "3"  # each revision sees the question, its latest draft and the critique


def test_synthesize_reads_all_paths() -> None:
    def reply(request: Request, index: int) -> str:
        if "attempted solutions" in request.messages[-1].text:
            assert request.messages[-1].text.count("Solution ") == 3
            return "Paths agree. Answer: 4"
        return f"path {index}. Answer: {3 + index % 2}"

    outcome = _run(Synthesize(n=3), FunctionBackend(reply))
    assert outcome.answer == "4" and outcome.samples[-1].tag == "synthesis"  # type: ignore[attr-defined]


def test_outline_drafts_plans_then_follows_each() -> None:
    def reply(request: Request, index: int) -> str:
        if "short plan" in request.messages[-1].text:
            return f"plan {index}: add"
        return f"following {request.messages[-2].text}. Answer: 4"

    outcome = _run(Outline(n=3), FunctionBackend(reply))
    paths = [s for s in outcome.samples if s.tag.startswith("path")]  # type: ignore[attr-defined]
    assert [p.text.split(".")[0] for p in paths] == [
        "following plan 0: add",
        "following plan 1: add",
        "following plan 2: add",
    ]
    assert outcome.answer == "4"  # type: ignore[attr-defined]


def test_allocation_and_diversity_helpers() -> None:
    assert allocate_widths([1.0, 1.0], 4, 0.5) == [2, 2]
    assert sum(allocate_widths([0.9, 0.1, 0.5], 6, 0.2)) == 6
    assert allocate_widths([0.9, 0.1], 6, 0.1)[0] > 3
    samples = [
        Sample(text="x = 4", answer=None, completion_tokens=1, score=0.9),
        Sample(text="y = 4", answer=None, completion_tokens=1, score=0.8),
        Sample(text="z = 5", answer=None, completion_tokens=1, score=0.5),
    ]
    assert diverse_top([0, 1, 2], samples, 2) == [0, 2]  # one per intermediate answer first


def test_beam_expands_scored_steps_and_answers_from_the_best_complete_path() -> None:
    def step(request: Request, index: int) -> Completion:
        depth = request.prefill.count("\n")
        if depth == 0:
            return Completion(text=f"2 + 2 = {3 + index % 2}", completion_tokens=5)
        value = re.findall(r"= (\d+)", request.prefill)[-1]
        return Completion(text=f"Answer: {value}", completion_tokens=2)

    scorer = FunctionVerifier(lambda messages, trace: 1.0 if "= 4" in trace else 0.1)
    backend = FunctionBackend(step)
    outcome = _run(Beam(scorer=scorer, width=2, branching=2, max_steps=3), backend)
    assert outcome.answer == "4"  # type: ignore[attr-defined]
    expansions = [r for r in backend.requests if r.prefill]
    assert all(r.sampling.stop == ("\n",) for r in backend.requests)
    assert sorted(r.n for r in expansions) == [1, 3]  # REBASE: the better node gets the wider subtree


def test_prune_stops_redundant_traces_but_keeps_distinct_ones() -> None:
    def grow(request: Request, index: int) -> Completion:
        if not request.prefill:  # first segment: traces reach 4, 4, 4, 5
            return Completion(
                text=f"t{index} {'5' if index == 3 else '4'}", finish_reason="length", completion_tokens=4
            )
        return Completion(text=" so Answer: " + request.prefill.split()[-1], completion_tokens=3)

    backend = FunctionBackend(grow)
    outcome = _run(Prune(n=4, segment_tokens=4, keep_per_cluster=1), backend)
    continued = [r for r in backend.requests if r.prefill]
    assert len(continued) == 2  # one survivor per cluster ("4" and "5"), two traces pruned
    assert outcome.answer == "4" and outcome.reason == "4 traces, 2 pruned as redundant"  # type: ignore[attr-defined]


def test_nothink_switches_thinking_off_on_every_draw() -> None:
    decision = NoThink(Vote(n=2)).decide(())
    assert isinstance(decision, Draw) and decision.thinking is False
    assert parse_strategy("nothink:vote@3").name == "nothink:vote@3"
    backend = FunctionBackend(lambda request, index: "Answer: 4")
    _run(NoThink(Vote(n=2)), backend)
    assert backend.requests[0].thinking is False


def test_parse_every_strategy_name() -> None:
    for spec in ("best_of_n@4", "refine@2", "synthesize@3", "outline@2", "beam@2", "prune@6"):
        assert parse_strategy(spec).name.startswith(spec.split("@")[0])
    assert parse_strategy("prune@6", temperature=0.2).temperature == 0.2  # type: ignore[attr-defined]


def test_nested_judge_calls_hold_under_a_concurrency_limit_of_one() -> None:
    from budgetflow.answers import MatchGrader
    from budgetflow.evaluate.datasets import Dataset
    from budgetflow.evaluate.runner import evaluate
    from budgetflow.runtime.context import EndpointLimits
    from budgetflow.types import Question

    def reply(request: Request, index: int) -> str:
        return "yes" if "Proposed solution" in request.messages[0].text else "Answer: 4"

    questions = tuple(Question(id=f"q{i}", text="2+2", gold="4", messages=QUESTION) for i in range(4))
    dataset = Dataset(name="nested", questions=questions, grader=MatchGrader())
    backend = FunctionBackend(reply)

    async def body() -> float:
        strategy = BestOfN(n=2, verifier=JudgeVerifier(samples=2))
        run = evaluate(
            dataset,
            strategy,
            backend,
            sampling=SamplingParams(),
            concurrency=4,
            limits=EndpointLimits(concurrency=1),
        )
        report = await asyncio.wait_for(run, timeout=10)
        return report.accuracy

    assert asyncio.run(body()) == 1.0
    judged = [r for r in backend.requests if "Proposed solution" in r.messages[0].text]
    assert len(judged) == 4 * 2  # every sample of every question was judged
