"""Ensemble sampling: a question's samples spread over its alternative prompts."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from typer.testing import CliRunner

from budgetflow.allocate import make_allocator
from budgetflow.answers import MatchGrader
from budgetflow.backends.scripted import FunctionBackend
from budgetflow.cli import app
from budgetflow.evaluate.allocated import run_allocated
from budgetflow.evaluate.bank import load_bank, record_bank
from budgetflow.evaluate.datasets import Dataset, load_dataset
from budgetflow.types import Message, Question, Request, SamplingParams


def _question(index: int) -> Question:
    prompts = tuple((Message("user", f"prompt {p} of q{index}"),) for p in "abc")
    return Question(id=f"q{index}", text=f"q{index}", gold="1", messages=prompts[0], alternates=prompts[1:])


def _which_prompt(request: Request, index: int) -> str:
    return f"Answer: {request.messages[0].text.split()[1]}"  # answers with the prompt's letter


def test_prompt_shares_rotate_over_the_prompts() -> None:
    question = _question(0)
    assert [count for _, count in question.prompt_shares(7)] == [3, 2, 2]
    shares = question.prompt_shares(2, first=2)
    assert [messages[0].text for messages, _ in shares] == ["prompt a of q0", "prompt c of q0"]
    plain = Question(id="p", text="p", gold="1", messages=(Message("user", "only"),))
    assert plain.prompt_shares(3) == [((Message("user", "only"),), 3)]


def test_built_in_tasks_carry_four_few_shot_prompts() -> None:
    question = load_dataset("chain_sum", limit=1).questions[0]
    texts = [messages[0].text for messages in question.prompts]
    assert len(set(texts)) == 4 and all(question.text in t and "Answer:" in t for t in texts)


def test_recording_with_an_ensemble_spreads_the_samples_and_keeps_greedy_on_its_prompt() -> None:
    dataset = Dataset(name="e", questions=(_question(0),), grader=MatchGrader())
    backend = FunctionBackend(_which_prompt)
    sampling = SamplingParams(max_tokens=8)
    bank = asyncio.run(record_bank(dataset, backend, k=6, sampling=sampling, temperature=0.5, ensemble=True))
    assert bank[0].greedy is not None and bank[0].greedy.answer == "a"
    assert sorted(s.answer or "" for s in bank[0].samples) == ["a", "a", "b", "b", "c", "c"]
    single = asyncio.run(
        record_bank(dataset, backend, k=3, sampling=SamplingParams(max_tokens=8), temperature=0.5)
    )
    assert [s.answer for s in single[0].samples] == ["a", "a", "a"]


def test_live_allocation_with_an_ensemble_asks_every_prompt() -> None:
    dataset = Dataset(name="e", questions=tuple(_question(i) for i in range(2)), grader=MatchGrader())
    backend = FunctionBackend(_which_prompt)
    report = asyncio.run(
        run_allocated(
            dataset,
            backend,
            make_allocator("uniform", use_greedy=True),
            budget_samples=8,
            sampling=SamplingParams(seed=1),
            ensemble=True,
        )
    )
    asked = {r.messages[0].text.split()[1] for r in backend.requests if r.sampling.temperature > 0}
    greedy = {r.messages[0].text.split()[1] for r in backend.requests if r.sampling.temperature == 0}
    assert asked == {"a", "b", "c"} and greedy == {"a"}
    assert sum(r.samples for r in report.results) == 8


def test_bank_record_cli_takes_prompt_ensemble(stub_url: str, tmp_path: Path) -> None:
    output = tmp_path / "bank.jsonl"
    result = CliRunner().invoke(
        app,
        ["bank", "record", "--output", str(output), "--dataset", "chain_sum", "--limit", "2", "--k", "4",
         "--backend", "openai", "--base-url", stub_url, "--model", "stub", "--prompt-ensemble"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert all(len(q.samples) == 4 for q in load_bank(output))
    assert json.loads(output.read_text().splitlines()[0])["samples"][0]["mean_logprob"] is not None


def test_eval_cli_runs_allocators_with_confidence_and_an_ensemble(stub_url: str, tmp_path: Path) -> None:
    output = tmp_path / "out.json"
    result = CliRunner().invoke(
        app,
        ["eval", "--backend", "openai", "--base-url", stub_url, "--model", "stub", "--dataset", "chain_sum",
         "--limit", "3", "--allocator", "online", "--greedy-evidence", "--confidence-weight", "10",
         "--prompt-ensemble", "--budget-samples", "9", "--output", str(output)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(output.read_text())["reports"][0]
    assert report["strategy"] == "alloc:online@9"
    assert sum(q["samples"] for q in report["results"]) <= 9
    assert all(q["answer"] == "7" for q in report["results"])
