"""Answer equivalence: numeric (`1,000` = `1000` = `1000.0` = `\\frac{2000}{2}`) and canonical text.

`normalize_answer` is the key answers are counted by when votes are tallied, and the first test
every grader applies: two answers with one key state the same answer. The key is the exact value
for numbers (units, currency, percent signs and markdown dropped: `**18**`, `\\$18` and `18 eggs`
are 18) and `canonical_text` otherwise (`\\dfrac{\\pi}{2}` = `\\frac{\\pi}{2}`). Equivalence beyond
spelling (`\\frac{1}{\\sqrt{2}}` = `\\frac{\\sqrt{2}}{2}`) is `budgetflow.answers.math_verify`'s job.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from fractions import Fraction

from budgetflow.answers.latex import canonical_text, latex_number

__all__ = ["answers_match", "normalize_answer", "parse_number"]

_NUMERIC = re.compile(r"^[-+]?(\d[\d,]*(\.\d*)?|\.\d+)(e[-+]?\d+)?$", re.IGNORECASE)
_FRACTION = re.compile(r"^([-+]?\d+)\s*/\s*(\d+)$")
_UNIT_NOISE = re.compile(r"^[$€£]|\\?%$|\$$", re.IGNORECASE)
#: A number followed by at most three words of unit: `18 eggs`, `12 square feet`.
_TRAILING_UNIT = re.compile(r"^(\S+)\s+[a-zA-Z]+(?:\s+[a-zA-Z]+){0,2}$")


def parse_number(text: str) -> Fraction | None:
    """The exact value of a plain number (`1,000`, `-3.50`, `$12`, `7/2`, `\\frac{7}{2}`, `50%` →
    50, `18 eggs` → 18), or None."""
    cleaned = canonical_text(text)
    unit = _TRAILING_UNIT.match(cleaned)
    if unit:
        cleaned = unit.group(1)
    cleaned = _UNIT_NOISE.sub("", cleaned).strip()
    fraction = _FRACTION.match(cleaned)
    if fraction:
        denominator = int(fraction.group(2))
        return Fraction(int(fraction.group(1)), denominator) if denominator else None
    if not _NUMERIC.match(cleaned) or not _commas_well_placed(cleaned):
        return latex_number(cleaned)
    try:
        return Fraction(Decimal(cleaned.replace(",", "")))
    except (InvalidOperation, ValueError):
        return None


def _commas_well_placed(text: str) -> bool:
    integer = text.lstrip("+-").split(".")[0].split("e")[0].split("E")[0]
    if "," not in integer:
        return True
    groups = integer.split(",")
    return 1 <= len(groups[0]) <= 3 and all(len(group) == 3 for group in groups[1:])


def normalize_answer(text: str) -> str:
    """The key answers are counted by: the exact number when numeric, else the canonical text
    (folded to lower case unless it is LaTeX, where case can matter)."""
    number = parse_number(text)
    if number is not None:
        return str(number)
    canonical = canonical_text(text)
    return canonical if "\\" in canonical else canonical.lower()


def answers_match(predicted: str | None, gold: str) -> bool:
    """Whether `predicted` states the same answer as `gold` (same number, else same canonical text)."""
    if predicted is None:
        return False
    return normalize_answer(predicted) == normalize_answer(gold)
