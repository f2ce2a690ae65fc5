"""Pull a final answer out of a completion: `\\boxed{…}`, `#### N`, `Answer: …`, or a last number.

What counts as an answer depends on the dataset (`AnswerKind`): for `"number"` (GSM8K, SVAMP, the
built-in arithmetic) the stated answer must contain a number, and the number is the answer
(`Answer: 18 eggs` → `18`); for `"math"` (MATH-500, AIME, AMC) it is a LaTeX expression; for
`"text"` a short phrase. A stated answer that is prose (`Answer: correct` on a numeric task, a
sentence of explanation) is no answer: None, which votes for nothing, rather than a ballot of
its own.
"""

from __future__ import annotations

import re
from typing import Literal

__all__ = ["AnswerKind", "extract_answer", "extract_boxed"]

AnswerKind = Literal["number", "math", "text"]

#: `Answer: x`, `answer is x`, `**Answer:** x`, `Final answer = x` (the last one in the text wins).
_ANSWER_LINE = re.compile(r"answer(?:\*\*|__)?\s*(?:is\s*:?|:|=)\s*(?:\*\*|__)?(?=\S)", re.IGNORECASE)
_HASHES = re.compile(r"####\s*(.+)")
_NUMBER = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?(?:\s*/\s*\d+)?|-?\.\d+")
_LEADING_NUMBER = re.compile(r"^(?:\\\$|\$)?\s*(-?\s*\$?\d[\d,]*(?:\.\d+)?(?:\s*/\s*\d+)?%?|-?\.\d+%?)")
#: Where a stated answer's explanation begins: `18 because…`, `18, since…`, `18. The …`.
_EXPLANATION = re.compile(r"\s*(?:[,;]|\s)\s*(?:because|since|as|so|which|and|but|for|from)\b.*$|\.\s+\S.*$")
_WORD = re.compile(r"[a-zA-Z]{2,}")
_LATEX_COMMAND = re.compile(r"\\[a-zA-Z]+(?:\{[^{}]*\})?")
#: More words than this (outside LaTeX commands) is prose, not a stated answer.
MAX_ANSWER_WORDS = {"number": 3, "math": 3, "text": 6}
#: A text reply without an `Answer:` marker is its own answer only when this short.
MAX_BARE_WORDS = 2


def extract_boxed(text: str) -> str | None:
    """The content of the last `\\boxed{…}` (balanced braces), or None."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, begin = 0, start + len("\\boxed{")
    for index in range(begin, len(text)):
        char = text[index]
        if char == "{":
            depth += 1
        elif char == "}":
            if depth == 0:
                return text[begin:index].strip()
            depth -= 1
    return None


def extract_answer(text: str, kind: AnswerKind = "text") -> str | None:
    """The final answer stated in `text`, or None when it states none.

    Looks, in order, for `\\boxed{…}`, `#### …`, the last `Answer: …` (markdown allowed), for
    `kind="text"` a first line of one or two words and no digits, and finally the last number. A
    stated answer keeps its first line; unless it is maths, it loses its explanation
    (`because …`) and, when it is an equation (`1 + 5 = 6`), its left side; for `kind="number"`
    it is the number it contains.
    """
    boxed = extract_boxed(text)
    if boxed is not None:
        return _stated(boxed, kind)
    hashes = _HASHES.findall(text)
    if hashes:
        return _stated(hashes[-1], kind)
    answer_lines = list(_ANSWER_LINE.finditer(text))
    if answer_lines:
        return _stated(_first_line(text[answer_lines[-1].end() :]), kind)
    first = _first_line(text)
    if kind == "text" and _is_bare_reply(first):  # `nus` to "spell sun backward"
        return _clean(first)
    numbers = _NUMBER.findall(text)
    return _clean(numbers[-1]) if numbers else None


def _stated(value: str, kind: AnswerKind) -> str | None:
    """A stated answer's value, or None when it is prose rather than an answer."""
    cleaned = _clean(value.replace("**", "").replace("__", ""))
    if cleaned is None:
        return None
    value = cleaned
    if kind != "math":  # a maths answer may be an equation; `x = 5` is canonicalised to 5 later
        value = _EXPLANATION.sub("", value).strip()
        if "=" in value:
            value = value.rsplit("=", 1)[1].strip()
    if kind == "number":
        number = _LEADING_NUMBER.match(value)
        return _clean(number.group(1).replace(" ", "")) if number else None
    words = _WORD.findall(_LATEX_COMMAND.sub(" ", value))
    return _clean(value) if len(words) <= MAX_ANSWER_WORDS[kind] else None


def _is_bare_reply(line: str) -> bool:
    """A reply of at most `MAX_BARE_WORDS` words and no digits: an answer given without a marker."""
    return 0 < len(line.split()) <= MAX_BARE_WORDS and not any(c.isdigit() for c in line)


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def _clean(text: str) -> str | None:
    cleaned = text.strip().rstrip(".;,!").strip()
    if cleaned.startswith("$") and cleaned.endswith("$") and len(cleaned) > 1:
        cleaned = cleaned.strip("$").strip()
    return cleaned or None
