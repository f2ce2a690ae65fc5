"""Canonical text for a stated answer: markdown, currency and LaTeX spelling folded away.

`\\dfrac{14}{3}`, `\\frac{14}{3}` and `14/3` state one value; so do `\\left( 3, \\frac{\\pi}{2}
\\right)` and `(3,\\frac{\\pi}{2})`, `\\text{(C)}` and `C`, `90^\\circ` and `90`, `x=5` and `5`,
`\\sqrt2` and `\\sqrt{2}`, `**18**` and `\\$18`. `canonical_text` rewrites a stated answer into one
spelling (cheap and pure, so it can run anywhere); `latex_number` reads the exact value of a
simple numeric LaTeX answer (`\\frac{a}{b}`, `-\\dfrac12`, `3\\%`).
"""

from __future__ import annotations

import re
from fractions import Fraction

__all__ = ["canonical_text", "latex_number"]

_MARKDOWN = re.compile(r"\*\*|__|`")
_DOLLARS = re.compile(r"\\\$|(?<!\\)\$")
_SPACING = re.compile(r"\\[,;:! ]|\\quad|\\qquad|~")
_SIZING = re.compile(r"\\(?:left|right|big|Big|bigg|Bigg)(?![a-zA-Z])\s*")
_FRACTION_STYLES = re.compile(r"\\[dt]frac(?![a-zA-Z])")
_DEGREES = re.compile(r"\s*\^\s*\{?\s*\\circ\s*\}?|\s*°|\\degree(?![a-zA-Z])")
_TEXT = re.compile(r"\\(?:text|textbf|mathrm|mbox|textrm|operatorname)\s*\{([^{}]*)\}")
#: `\frac12` → `\frac{1}{2}`, `\frac1{x}` → `\frac{1}{x}`, `\sqrt2` → `\sqrt{2}`: single-token arguments.
_BARE_FRACTION = re.compile(r"\\frac\s*([0-9a-zA-Z])\s*([0-9a-zA-Z])")
_HALF_BARE_FRACTION = re.compile(r"\\frac\s*([0-9a-zA-Z])\s*(\{)")
_FRACTION_BARE_DENOMINATOR = re.compile(r"\\frac\s*(\{[^{}]*\})\s*([0-9a-zA-Z])")
_BARE_ROOT = re.compile(r"\\sqrt\s*([0-9a-zA-Z])")
#: A single variable named before the value: `x = 5`, `k=\frac{1}{2}` (not `x+y=5`).
_ASSIGNMENT = re.compile(r"^[a-zA-Z](?:_\{?\w+\}?)?\s*=\s*(?=\S)")
_CHOICE = re.compile(r"^\(?([A-E])\)?$")
_SIMPLE_FRACTION = re.compile(r"^([-+]?)\\frac\{([-+]?\d+)\}\{([-+]?\d+)\}$")
_OPERATOR_SPACE = re.compile(r"\s*([(){}\[\],+\-*/^=<>|\\])\s*")


def canonical_text(text: str) -> str:
    """`text` with presentation removed: markdown emphasis, `$`, `\\$`, LaTeX spacing and sizing,
    `\\dfrac`/`\\tfrac`, `\\text{…}`, degree signs, a leading `x =`, bare `\\frac12`/`\\sqrt2`
    arguments, a trailing period; spaces around operators dropped, other runs of spaces folded."""
    cleaned = _MARKDOWN.sub("", text)
    cleaned = _DOLLARS.sub("", cleaned)
    cleaned = _SPACING.sub(" ", cleaned)
    cleaned = _SIZING.sub("", cleaned)
    cleaned = _FRACTION_STYLES.sub(r"\\frac", cleaned)
    cleaned = _DEGREES.sub("", cleaned)
    cleaned = _TEXT.sub(r"\1", cleaned)
    cleaned = _braced_arguments(cleaned)
    cleaned = cleaned.strip().rstrip(".").strip()
    cleaned = _ASSIGNMENT.sub("", cleaned)
    choice = _CHOICE.match(cleaned)
    if choice:
        return choice.group(1)
    return " ".join(_OPERATOR_SPACE.sub(r"\1", cleaned).split())


def _braced_arguments(text: str) -> str:
    text = _BARE_FRACTION.sub(r"\\frac{\1}{\2}", text)
    text = _HALF_BARE_FRACTION.sub(r"\\frac{\1}\2", text)
    text = _FRACTION_BARE_DENOMINATOR.sub(r"\\frac\1{\2}", text)
    return _BARE_ROOT.sub(r"\\sqrt{\1}", text)


def latex_number(text: str) -> Fraction | None:
    """The exact value of `\\frac{a}{b}` with integer a, b (after `canonical_text`), or None."""
    match = _SIMPLE_FRACTION.match(text)
    if not match:
        return None
    sign, numerator, denominator = match.group(1), int(match.group(2)), int(match.group(3))
    if denominator == 0:
        return None
    value = Fraction(numerator, denominator)
    return -value if sign == "-" else value
