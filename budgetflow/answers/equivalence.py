"""Answer equivalence: numeric (`1,000` = `1000` = `1000.0`) and normalised exact match."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from fractions import Fraction

__all__ = ["answers_match", "normalize_answer", "parse_number"]

_NUMERIC = re.compile(r"^[-+]?(\d[\d,]*(\.\d*)?|\.\d+)(e[-+]?\d+)?$", re.IGNORECASE)
_FRACTION = re.compile(r"^([-+]?\d+)\s*/\s*(\d+)$")
_UNIT_NOISE = re.compile(r"^[$€£]|[%$]$|\s*(dollars?|cents?|units?)$", re.IGNORECASE)


def parse_number(text: str) -> Fraction | None:
    """The exact value of a plain number (`1,000`, `-3.50`, `$12`, `7/2`, `50%` → 50), or None."""
    cleaned = _UNIT_NOISE.sub("", text.strip()).strip()
    fraction = _FRACTION.match(cleaned)
    if fraction:
        denominator = int(fraction.group(2))
        return Fraction(int(fraction.group(1)), denominator) if denominator else None
    if not _NUMERIC.match(cleaned) or not _commas_well_placed(cleaned):
        return None
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
    """A canonical key for grouping answers: the exact number when numeric, else folded text."""
    number = parse_number(text)
    if number is not None:
        return str(number)
    return " ".join(text.strip().strip(".").lower().split())


def answers_match(predicted: str | None, gold: str) -> bool:
    """Whether `predicted` states the same answer as `gold` (numeric, else normalised exact)."""
    if predicted is None:
        return False
    gold_number, predicted_number = parse_number(gold), parse_number(predicted)
    if gold_number is not None and predicted_number is not None:
        return gold_number == predicted_number
    return normalize_answer(predicted) == normalize_answer(gold)
