"""Pull a final answer out of a completion: `Answer: …`, `\\boxed{…}`, `#### N`, or a last number."""

from __future__ import annotations

import re

__all__ = ["extract_answer", "extract_boxed"]

_ANSWER_LINE = re.compile(r"answer\s*(?:is\s*:?|:|=)\s*(.+)", re.IGNORECASE)
_HASHES = re.compile(r"####\s*(.+)")
_NUMBER = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?|-?\.\d+")


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


def extract_answer(text: str) -> str | None:
    """The final answer stated in `text`, or None when it states none.

    Looks, in order, for `\\boxed{…}`, `#### …`, the last `Answer: …` line, and finally the last
    number in the text. Trailing punctuation is trimmed.
    """
    boxed = extract_boxed(text)
    if boxed is not None:
        return boxed
    hashes = _HASHES.findall(text)
    if hashes:
        return _clean(hashes[-1])
    answers = _ANSWER_LINE.findall(text)
    if answers:
        return _clean(_first_line(answers[-1]))
    numbers = _NUMBER.findall(text)
    return _clean(numbers[-1]) if numbers else None


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def _clean(text: str) -> str | None:
    cleaned = text.strip().rstrip(".;,!").strip()
    if cleaned.startswith("$") and cleaned.endswith("$") and len(cleaned) > 1:
        cleaned = cleaned.strip("$").strip()
    return cleaned or None
