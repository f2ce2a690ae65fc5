"""Any reasoning-gym task as a dataset (`rg:NAME[:key=value,...]`)."""

from __future__ import annotations

import asyncio

import pytest

from budgetflow.errors import DatasetError
from budgetflow.evaluate import load_dataset
from budgetflow.evaluate.gym import parse_gym_spec


def test_a_spec_names_the_task_and_its_configuration() -> None:
    assert parse_gym_spec("rg:gcd") == ("gcd", {})
    name, config = parse_gym_spec('rg:basic_arithmetic:max_digits=1,operators=["*","+"],mode=easy')
    assert name == "basic_arithmetic" and config == {"max_digits": 1, "operators": ["*", "+"], "mode": "easy"}
    with pytest.raises(DatasetError, match="expected key=value, got 'max_digits'"):
        parse_gym_spec("rg:gcd:max_digits")


def test_generated_items_are_asked_few_shot_and_graded_by_the_task() -> None:
    dataset = load_dataset("rg:gcd:max_value=30", limit=4, seed=2)
    again = load_dataset("rg:gcd:max_value=30", limit=4, seed=2)
    assert [q.text for q in dataset.questions] == [q.text for q in again.questions]
    assert dataset.answer_kind == "number" and len(dataset) == 4
    question = dataset.questions[0]
    prompt = question.messages[0].text
    assert prompt.count("Answer: ") == 2 and prompt.endswith(f"Q: {question.text}\n")
    assert question.text not in prompt.split("\n\n")[0]  # the examples are other items
    assert asyncio.run(dataset.grader.grade(question.gold, question)) == 1.0
    assert dataset.extract(f"GCD: {question.gold}") == question.gold


def test_word_answers_make_a_text_task_and_a_short_reply_is_its_answer() -> None:
    dataset = load_dataset("rg:spell_backward:max_word_len=4", limit=3, seed=1)
    assert dataset.answer_kind == "text"
    question = dataset.questions[0]
    assert dataset.extract(f" {question.gold}\n") == question.gold
    assert asyncio.run(dataset.grader.grade(dataset.extract(question.gold), question)) == 1.0


def test_unknown_tasks_and_configurations_are_clear_errors() -> None:
    with pytest.raises(DatasetError, match="reasoning-gym has no task 'no_such_task'"):
        load_dataset("rg:no_such_task", limit=2)
    with pytest.raises(DatasetError, match="refused the configuration"):
        load_dataset("rg:gcd:no_such_option=1", limit=2)
