from __future__ import annotations

import pytest

from budgetflow.answers import answers_match, extract_answer, extract_boxed, normalize_answer, parse_number


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3 + 5 = 8. Answer: 8", "8"),
        ("so the answer is 42.", "42"),
        ("The final answer is $\\boxed{\\frac{1}{2}}$", "\\frac{1}{2}"),
        ("Natalia sold 48 clips.\n#### 72", "72"),
        ("first 3, then 4, finally 7", "7"),
        ("Answer: -1,250.", "-1,250"),
        ("no numbers here", None),
        ("Answer: 8\nQ: next", "8"),
    ],
)
def test_extract_answer(text: str, expected: str | None) -> None:
    assert extract_answer(text) == expected


def test_extract_boxed_handles_nested_braces_and_takes_the_last() -> None:
    assert extract_boxed("\\boxed{1} then \\boxed{\\sqrt{2}+{3}}") == "\\sqrt{2}+{3}"
    assert extract_boxed("\\boxed{unclosed") is None


@pytest.mark.parametrize(
    ("predicted", "gold", "same"),
    [
        ("1,000", "1000", True),
        ("1000.0", "1000", True),
        ("$12", "12", True),
        ("7/2", "3.5", True),
        ("50%", "50", True),
        ("-3", "3", False),
        ("1,00", "100", False),
        ("Paris", " paris.", True),
        ("Paris", "London", False),
        (None, "1", False),
    ],
)
def test_answers_match(predicted: str | None, gold: str, same: bool) -> None:
    assert answers_match(predicted, gold) is same


def test_parse_number_and_normalize() -> None:
    assert parse_number("1,234.50") == parse_number("1234.5")
    assert parse_number("abc") is None
    assert parse_number("1/0") is None
    assert normalize_answer("1,000") == normalize_answer("1000.00")
    assert normalize_answer("  Hello   World ") == "hello world"
