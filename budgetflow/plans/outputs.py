"""Typed node outputs: what a node's reply is read as (text, number, list, JSON), as the answer
its strategy votes on (a canonical string) and as the value its dependants receive."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from budgetflow.answers.extract import extract_answer
from budgetflow.plans.model import Node

__all__ = ["extractor", "render", "value_of"]

_JSON_START = re.compile(r"[\[{]")


def extractor(node: Node) -> Callable[[str], str | None]:
    """The answer a reply gives for `node` (None when it gives none of the node's type)."""
    if node.output == "number":
        return lambda text: extract_answer(text, "number")
    if node.output == "list":
        return _list_answer
    if node.output == "json":
        return lambda text: _json_answer(text, node.schema)
    return _text_answer


def value_of(node: Node, answer: str) -> Any:
    """The typed value of an extracted answer."""
    if node.output == "number":
        number = float(answer.replace(",", ""))
        return int(number) if number.is_integer() else number
    if node.output in ("list", "json"):
        return json.loads(answer)
    return answer


def render(value: Any) -> str:
    """A value as it appears in a dependant's prompt."""
    if isinstance(value, str):
        return value
    if isinstance(value, float | int):
        return f"{value:g}" if isinstance(value, float) else str(value)
    return json.dumps(value)


def _text_answer(text: str) -> str | None:
    stripped = text.strip()
    marked = extract_answer(stripped, "text") if "answer" in stripped.lower() else None
    return marked or stripped or None


def _list_answer(text: str) -> str | None:
    """A JSON array in the reply, else its bullet or numbered lines, else comma-separated items."""
    found = _first_json(text, list)
    if found is None:
        lines = [re.sub(r"^\s*(?:[-*•]|\d+[.)])\s*", "", line).strip() for line in text.splitlines()]
        items = [line for line in lines if line]
        if len(items) == 1 and "," in items[0]:
            items = [part.strip() for part in items[0].split(",") if part.strip()]
        found = items or None
    return None if not found else json.dumps(found)


def _json_answer(text: str, schema: dict[str, object] | None) -> str | None:
    found = _first_json(text, dict)
    if found is None or (schema is not None and not _matches(found, schema)):
        return None
    return json.dumps(found, sort_keys=True)


def _first_json(text: str, kind: type) -> Any:
    decoder = json.JSONDecoder()
    for match in _JSON_START.finditer(text):
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except ValueError:
            continue
        if isinstance(value, kind):
            return value
    return None


def _matches(value: Any, schema: dict[str, object]) -> bool:
    """JSON Schema validation (the `jsonschema` package)."""
    import jsonschema

    try:
        jsonschema.validate(value, schema)
    except jsonschema.ValidationError:
        return False
    return True
