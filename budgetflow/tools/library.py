"""Tools an agent node may call: a calculator, a Python runner, search over local documents.

A tool is a name, a description, a JSON Schema for its arguments (what an OpenAI-compatible
endpoint is told in `tools`), and an async `run(arguments) -> str`. A tool never raises for a bad
call: the model sees `error: …` as the tool's result and may try again (its tool-call budget
still counts the call). Tools are configured per role (`budgetflow.plans.routing`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import simpleeval
from rank_bm25 import BM25Okapi

from budgetflow.errors import ConfigError

__all__ = [
    "Calculator",
    "DocumentSearch",
    "Passage",
    "Tool",
    "ToolSpec",
    "tool_error",
]


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """What the model is told about a tool: its name, what it does, its arguments' schema."""

    name: str
    description: str
    parameters: dict[str, Any] = field(default_factory=dict)
    #: The argument a text-protocol call (`CALL name: …`) fills.
    main_argument: str = "input"

    @classmethod
    def one_argument(cls, name: str, description: str, argument: str, meaning: str) -> ToolSpec:
        """A tool taking one string argument (what a text-protocol call fills)."""
        parameters = {
            "type": "object",
            "properties": {argument: {"type": "string", "description": meaning}},
            "required": [argument],
        }
        return cls(name, description, parameters, main_argument=argument)

    def openai(self) -> dict[str, Any]:
        """The entry of an OpenAI `tools` list."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }


class Tool(Protocol):
    @property
    def spec(self) -> ToolSpec: ...

    async def run(self, arguments: Mapping[str, Any]) -> str: ...


def tool_error(message: str) -> str:
    """A tool's answer to a call it cannot carry out (the model reads it and may retry)."""
    return f"error: {message}"


# ---- calculator ---------------------------------------------------------------------------------

_CALCULATOR_FUNCTIONS = {
    "sqrt": math.sqrt,
    "abs": abs,
    "round": round,
    "min": min,
    "max": max,
    "floor": math.floor,
    "ceil": math.ceil,
    "log": math.log,
    "exp": math.exp,
}


@dataclass(frozen=True, slots=True)
class Calculator:
    """Arithmetic without `eval`: `simpleeval` walks the expression's syntax tree, allowing
    numbers, + - * / // % **, parentheses and a few math functions; powers and results are
    bounded, names and attributes are refused."""

    spec: ToolSpec = field(
        default_factory=lambda: ToolSpec.one_argument(
            "calculator",
            "Evaluate an arithmetic expression such as (17 + 26) * 3 / 2 or sqrt(2).",
            "expression",
            "the expression",
        )
    )

    async def run(self, arguments: Mapping[str, Any]) -> str:
        expression = arguments.get("expression")
        if not isinstance(expression, str) or not expression.strip():
            return tool_error("calculator needs an 'expression' string")
        return self.evaluate(expression)

    def evaluate(self, expression: str) -> str:
        text = expression.strip().replace("×", "*").replace("÷", "/").replace("^", "**")
        if len(text) > 500:
            return tool_error("expression too long (500 characters at most)")
        evaluator = simpleeval.SimpleEval(functions=_CALCULATOR_FUNCTIONS, names={"pi": math.pi, "e": math.e})
        try:
            value = evaluator.eval(text)
        except ZeroDivisionError:
            return tool_error("division by zero")
        except (simpleeval.InvalidExpression, SyntaxError, TypeError, ValueError, OverflowError) as error:
            return tool_error(f"cannot evaluate {expression!r}: {error}")
        if isinstance(value, bool) or not isinstance(value, int | float):
            return tool_error(f"{expression!r} is not a number")
        return _number(value)


def _number(value: float) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value) if isinstance(value, float) else str(value)


# ---- document search ----------------------------------------------------------------------------

_WORD = re.compile(r"[a-z0-9]+")


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


@dataclass(frozen=True, slots=True)
class Passage:
    source: str
    text: str


class DocumentSearch:
    """BM25 (Okapi, `rank_bm25`) over the user's own documents, split into passages of about
    `passage_words` words; a call returns the `top_k` best passages with their source names."""

    def __init__(self, passages: Sequence[Passage], *, top_k: int = 3) -> None:
        if not passages:
            raise ConfigError("document search needs at least one document")
        self.passages = list(passages)
        self.top_k = top_k
        self._index = BM25Okapi([_words(p.text) or [""] for p in self.passages])
        self.spec = ToolSpec.one_argument(
            "search",
            "Search the user's documents; returns the most relevant passages.",
            "query",
            "what to look for",
        )

    @classmethod
    def from_texts(
        cls, texts: Mapping[str, str], *, passage_words: int = 120, top_k: int = 3
    ) -> DocumentSearch:
        """Documents given as {name: text}."""
        passages = [
            Passage(name, chunk) for name, text in texts.items() for chunk in _chunks(text, passage_words)
        ]
        return cls(passages, top_k=top_k)

    @classmethod
    def from_directory(cls, folder: Path, *, passage_words: int = 120, top_k: int = 3) -> DocumentSearch:
        """Every .txt and .md file under `folder`."""
        if not folder.is_dir():
            raise ConfigError(f"document search: {folder} is not a directory")
        files = sorted(p for p in folder.rglob("*") if p.suffix in (".txt", ".md") and p.is_file())
        if not files:
            raise ConfigError(f"document search: no .txt or .md files under {folder}")
        texts = {str(p.relative_to(folder)): p.read_text(encoding="utf-8", errors="replace") for p in files}
        return cls.from_texts(texts, passage_words=passage_words, top_k=top_k)

    async def run(self, arguments: Mapping[str, Any]) -> str:
        query = arguments.get("query")
        if not isinstance(query, str) or not _words(query):
            return tool_error("search needs a 'query' with words in it")
        return json.dumps([{"source": p.source, "text": p.text} for p in self.search(query)])

    def search(self, query: str) -> list[Passage]:
        scores = self._index.get_scores(_words(query))
        ranked = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
        return [self.passages[i] for i in ranked[: self.top_k] if scores[i] > 0]


def _chunks(text: str, size: int) -> list[str]:
    words = text.split()
    return [" ".join(words[start : start + size]) for start in range(0, len(words), size)] or [""]
