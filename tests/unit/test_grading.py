"""Grading on the shared datasets: answer extraction, vote keys, math-verify, and an eval whose
endpoint states every correct answer in a different format."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from budgetflow.answers import extract_answer, normalize_answer
from budgetflow.answers.extract import AnswerKind
from budgetflow.answers.grading import MatchGrader, MathGrader
from budgetflow.answers.symbolic import SymbolicEquivalence
from budgetflow.answers.voting import majority_answer
from budgetflow.cli import app
from budgetflow.evaluate import load_dataset
from budgetflow.evaluate.datasets import PromptSpec
from budgetflow.evaluate.session import DatasetSpec, EvalConfig, run_eval
from budgetflow.runtime.endpoints import EndpointSpec
from budgetflow.strategies import parse_strategy
from budgetflow.testing import StubOpenAIServer
from budgetflow.types import Message, Question, SamplingParams

#: (gold, predicted, equivalent): each pair was graded wrong by string match.
PAIRS = [
    (r"\frac{14}{3}", r"\dfrac{14}{3}", True),
    (r"\frac{14}{3}", "14/3", True),
    (r"\frac{14}{3}", "13/3", False),
    (r"\left( 3, \frac{\pi}{2} \right)", r"(3, \frac{\pi}{2})", True),
    (r"\left( 3, \frac{\pi}{2} \right)", r"(3, \frac{\pi}{3})", False),
    (r"\text{(C)}", "C", True),
    (r"\text{(C)}", "D", False),
    (r"90^\circ", "90", True),
    (r"90^\circ", "45", False),
    ("5", "x=5", True),
    ("5", "x=6", False),
    (r"\sqrt2", r"\sqrt{2}", True),
    (r"\sqrt2", r"\sqrt{3}", False),
    (r"\frac12", r"\frac{1}{2}", True),
    (r"\frac12", r"\frac{1}{3}", False),
    (r"\frac{\sqrt{2}}{2}", r"\frac{1}{\sqrt{2}}", True),  # only math-verify sees this one
    (r"\frac{\sqrt{2}}{2}", r"\frac{1}{2}", False),
    (r"2\pi", r"\pi \cdot 2", True),
    ("18", r"\$18", True),
    ("18", "**18**", True),
    ("18", "18 eggs", True),
    ("18", "19", False),
]


def _question(gold: str) -> Question:
    return Question(id="q", text="q", gold=gold, messages=(Message("user", "q"),))


@pytest.mark.parametrize(("gold", "predicted", "equivalent"), PAIRS)
def test_math_grader_decides_each_pair(gold: str, predicted: str, equivalent: bool) -> None:
    grader = MathGrader()
    try:
        score = asyncio.run(grader.grade(predicted, _question(gold)))
    finally:
        grader.equivalence.close()
    assert score == (1.0 if equivalent else 0.0)


#: Equal only symbolically: separate vote keys, found equal by the grader's math-verify alone.
SYMBOLIC_ONLY = {(r"\frac{\sqrt{2}}{2}", r"\frac{1}{\sqrt{2}}"), (r"2\pi", r"\pi \cdot 2")}


@pytest.mark.parametrize(
    ("gold", "predicted", "equivalent"), [p for p in PAIRS if p[:2] not in SYMBOLIC_ONLY]
)
def test_vote_keys_agree_with_the_grader_on_spelling(gold: str, predicted: str, equivalent: bool) -> None:
    """Answers that differ only in spelling vote together (`\\dfrac{14}{3}` and `14/3` are one
    cluster); different answers never share a key."""
    assert (normalize_answer(gold) == normalize_answer(predicted)) is equivalent


def test_formatted_numeric_answers_extract_to_one_number_and_one_vote() -> None:
    replies = [
        "Answer: 18 eggs",
        "Answer: **18**",
        "**Answer:** 18",
        "The answer is 18 because she sells 16 - 3 - 4 = 9 eggs at $2.",
        r"Answer: \$18",
        "She makes 9 * 2 = 18 dollars.\nAnswer: 18.",
    ]
    answers = [extract_answer(reply, "number") for reply in replies]
    assert answers == ["18"] * len(replies)
    assert majority_answer([*answers, "17"]) == ("18", len(replies))
    assert asyncio.run(MatchGrader().grade(extract_answer(replies[3], "number"), _question("18"))) == 1.0


@pytest.mark.parametrize(
    ("reply", "kind", "expected"),
    [
        ("The answer is correct.", "number", None),
        ("Step 2 needed to eliminate complexity, answer: 1 + 5 = 17", "number", "17"),
        ("The answer is that we should think about the problem much more carefully", "text", None),
        ("Answer: Paris", "text", "Paris"),
        (r"so $x = \boxed{\dfrac{14}{3}}$.", "math", r"\dfrac{14}{3}"),
        (r"Answer: $5x - 7y + 11z + 4 = 0$", "math", "5x - 7y + 11z + 4 = 0"),
    ],
)
def test_extraction_takes_no_prose_for_an_answer(reply: str, kind: AnswerKind, expected: str | None) -> None:
    assert extract_answer(reply, kind) == expected


def test_every_math500_gold_matches_its_own_solutions_boxed_answer(shared_data: Path) -> None:
    dataset = load_dataset(str(shared_data / "math500-test.jsonl"))
    assert len(dataset) == 500 and dataset.answer_kind == "math"

    async def grade_all() -> list[float]:
        answers = [extract_answer(q.entry["solution"], "math") for q in dataset.questions]
        return [await dataset.grader.grade(a, q) for a, q in zip(answers, dataset.questions, strict=True)]

    assert sum(asyncio.run(grade_all())) == 500


def test_a_comparison_that_overruns_counts_as_wrong_and_the_next_gets_a_fresh_worker() -> None:
    equivalence = SymbolicEquivalence(timeout_seconds=1e-4)  # less than starting a Python process
    try:
        assert asyncio.run(equivalence.equal(r"\frac{1}{\sqrt{2}}", r"\frac{\sqrt{2}}{2}")) is False
        assert equivalence.timeouts == 1
        equivalence.timeout_seconds = 30.0
        assert asyncio.run(equivalence.equal(r"\frac{1}{\sqrt{2}}", r"\frac{\sqrt{2}}{2}")) is True
    finally:
        equivalence.close()


#: Ways a correct reply states a MATH-500 gold (g) and a GSM8K gold (n).
MATH_FORMATS = [
    lambda g: f"We simplify.\nThe final answer is $\\boxed{{{g}}}$.",
    lambda g: f"Hence $\\boxed{{{g.replace(chr(92) + 'frac', chr(92) + 'dfrac')}}}$",
    lambda g: f"**Answer:** $\\boxed{{\\displaystyle {g}}}$",
    lambda g: f"So the answer is $\\boxed{{ {g} }}$. Done.",
]
NUMBER_FORMATS = [
    lambda n: f"Answer: {n} eggs",
    lambda n: f"Answer: **{n}**",
    lambda n: f"**Answer:** {n}",
    lambda n: f"The answer is {n} because that is what the steps give.",
    lambda n: f"Answer: \\${n}",
    lambda n: f"So she has {n}.\nAnswer: {int(n):,}" if n.isdigit() else f"Answer: {n}",
]


def _formatted_replies(golds: dict[str, str], formats: list[Any]) -> Any:
    def reply(payload: dict[str, Any], index: int) -> str:
        prompt = payload["messages"][-1]["content"]
        problem = re.search(r"Problem: (.*)\Z", prompt, re.DOTALL)
        assert problem is not None
        key = problem.group(1).strip()
        number = list(golds).index(key)
        return str(formats[number % len(formats)](golds[key]))

    return reply


@pytest.mark.parametrize(("name", "limit"), [("math500-test.jsonl", 500), ("gsm8k-test.jsonl", 1319)])
def test_an_eval_of_formatted_correct_answers_is_graded_all_correct(
    shared_data: Path, name: str, limit: int
) -> None:
    spec = DatasetSpec(name=str(shared_data / name), limit=limit)
    data = spec.load()
    golds = {q.text: q.gold for q in data.questions}
    formats = MATH_FORMATS if data.answer_kind == "math" else NUMBER_FORMATS

    async def evaluate() -> float:
        async with StubOpenAIServer(reply=_formatted_replies(golds, formats), keep_payloads=False) as server:
            config = EvalConfig(
                dataset=spec,
                strategies=(parse_strategy("single"),),
                sampling=SamplingParams(max_tokens=64),
                concurrency=16,
                endpoint=EndpointSpec(kind="openai", base_url=server.base_url, model="stub"),
            )
            (report,) = await run_eval(config, data)
            return report.accuracy

    assert len(golds) == limit
    assert asyncio.run(evaluate()) == 1.0


def test_a_users_prompt_template_and_system_message_ask_every_question(tmp_path: Path) -> None:
    data = tmp_path / "own.jsonl"
    data.write_text('{"question": "What is {x} in 2 + x = 5?", "answer": "3"}\n')
    template = tmp_path / "prompt.txt"
    template.write_text("Q: {question}\nReply with the number only.")
    spec = DatasetSpec(name=str(data), prompt=PromptSpec.from_file(template, system="Be terse."))
    (question,) = spec.load().questions
    assert [(m.role, m.content) for m in question.messages] == [
        ("system", "Be terse."),
        ("user", "Q: What is {x} in 2 + x = 5?\nReply with the number only."),
    ]


def test_a_prompt_template_without_the_question_is_refused_naming_the_flag_and_file(
    stub_url: str, tmp_path: Path
) -> None:
    template = tmp_path / "prompt.txt"
    template.write_text("Answer the question.")
    result = CliRunner().invoke(
        app,
        ["eval", "--backend", "openai", "--base-url", stub_url, "--model", "stub",
         "--dataset", "chain_sum", "--limit", "2", "--prompt-template", str(template)],
    )  # fmt: skip
    assert result.exit_code != 0
    assert "--prompt-template" in result.output and "prompt.txt" in result.output
    assert "{question}" in result.output
