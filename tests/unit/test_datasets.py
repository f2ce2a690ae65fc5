from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from budgetflow.errors import DatasetError
from budgetflow.evaluate import FieldMap, load_dataset, load_jsonl


def test_builtin_dataset_is_deterministic_and_graded_by_reasoning_gym() -> None:
    first = load_dataset("chain_sum", limit=5, seed=3)
    again = load_dataset("chain_sum", limit=5, seed=3)
    other = load_dataset("chain_sum", limit=5, seed=4)
    assert [q.text for q in first.questions] == [q.text for q in again.questions]
    assert [q.text for q in first.questions] != [q.text for q in other.questions]
    question = first.questions[0]
    assert question.text in question.messages[0].text
    assert asyncio.run(first.grader.grade(question.gold, question)) == 1.0
    assert asyncio.run(first.grader.grade("not a number", question)) == 0.0
    assert "\nQ:" in first.stop


def test_unknown_dataset_names_the_choices() -> None:
    with pytest.raises(DatasetError, match="unknown dataset 'nope'.*chain_sum"):
        load_dataset("nope")
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset("missing.jsonl")


def test_malformed_jsonl_line_is_reported_with_its_number(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"question": "1+1", "answer": "2"}\n\n{"question": "2+2", "answer": \n')
    with pytest.raises(DatasetError, match=r"bad.jsonl:3: not valid JSON"):
        load_jsonl(path)


def test_missing_field_is_named_with_the_fields_present(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"q": "1+1", "a": "2"}\n')
    with pytest.raises(DatasetError, match="cannot tell which fields.*q, a"):
        load_jsonl(path)
    with pytest.raises(DatasetError, match=r"d.jsonl:1: no field 'prompt' \(fields present: q, a\)"):
        load_jsonl(path, fields=FieldMap(question=("prompt",), answer="a"))
    dataset = load_jsonl(path, fields=FieldMap(question=("q",), answer="a"))
    assert dataset.questions[0].gold == "2"


def test_non_object_line_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text("[1, 2]\n")
    with pytest.raises(DatasetError, match="d.jsonl:1: expected a JSON object, got list"):
        load_jsonl(path)


def test_shared_gsm8k_and_svamp_layouts_are_recognised(shared_data: Path) -> None:
    gsm8k = load_dataset(str(shared_data / "gsm8k-test.jsonl"), limit=3)
    assert len(gsm8k) == 3
    assert gsm8k.questions[0].gold == "18"  # the worked solution's "#### 18"
    svamp = load_dataset(str(shared_data / "svamp-test.jsonl"), limit=2)
    assert svamp.questions[0].gold.replace(".0", "").isdigit()
    assert asyncio.run(svamp.grader.grade(svamp.questions[0].gold, svamp.questions[0])) == 1.0
    math500 = load_dataset(str(shared_data / "math500-test.jsonl"), limit=1)
    assert math500.questions[0].gold
