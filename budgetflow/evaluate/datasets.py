"""Datasets: built-in reasoning-gym tasks generated with a fixed seed, and any JSONL file.

Built-in names (see `BUILTIN_DATASETS`) generate short arithmetic items the embedded model can
partly solve, asked with a two-example few-shot prompt and graded by reasoning-gym's own scorer.
A JSONL file maps its fields with a `FieldMap`; without one, the common layouts (GSM8K, SVAMP,
MATH-500, AIME, AMC) are recognised from the first line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from budgetflow.answers.extract import extract_answer
from budgetflow.answers.grading import Grader, MatchGrader
from budgetflow.answers.statement import AnswerStatement
from budgetflow.errors import DatasetError
from budgetflow.prompts import render_prompt
from budgetflow.types import Message, Question

__all__ = [
    "ARITHMETIC_STATEMENT",
    "BUILTIN_DATASETS",
    "AnswerStatement",
    "Dataset",
    "FieldMap",
    "load_dataset",
    "load_jsonl",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class BuiltinTask:
    """A reasoning-gym generator and the configuration that keeps its items small."""

    generator: str
    config: dict[str, Any]
    description: str


BUILTIN_DATASETS: dict[str, BuiltinTask] = {
    "chain_sum": BuiltinTask(
        generator="chain_sum",
        config={"min_terms": 2, "max_terms": 3, "min_digits": 1, "max_digits": 1},
        description="sums and differences of 2-3 one-digit numbers",
    ),
    "basic_arithmetic": BuiltinTask(
        generator="basic_arithmetic",
        config={
            "min_terms": 2,
            "max_terms": 2,
            "min_digits": 1,
            "max_digits": 2,
            "operators": ("+", "-"),
            "allow_parentheses": False,
            "allow_negation": False,
        },
        description="one + or - between two numbers of 1-2 digits",
    ),
}


#: Mixed-difficulty sets: equal shares of several built-in tasks, interleaved.
BUILTIN_MIXES: dict[str, tuple[str, ...]] = {
    "arith_mix": ("chain_sum", "chain_sum_3", "basic_arithmetic"),
}
BUILTIN_DATASETS["chain_sum_3"] = BuiltinTask(
    generator="chain_sum",
    config={"min_terms": 3, "max_terms": 4, "min_digits": 1, "max_digits": 1},
    description="sums and differences of 3-4 one-digit numbers",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class FieldMap:
    """Which JSONL fields hold the question (joined with a space when several) and the answer."""

    question: tuple[str, ...] = ("question",)
    answer: str = "answer"
    id: str | None = None


_KNOWN_LAYOUTS = (
    FieldMap(question=("question",), answer="answer"),
    FieldMap(question=("problem",), answer="answer"),
    FieldMap(question=("Body", "Question"), answer="Answer"),
)


#: The built-in arithmetic tasks' replies read "7 + 4 = 11. Answer: 11"; the period ends the number.
ARITHMETIC_STATEMENT = AnswerStatement(opening="{question} =", answer=" {answer}.")


@dataclass(frozen=True, slots=True, kw_only=True)
class Dataset:
    """Questions plus the grader that scores answers to them."""

    name: str
    questions: tuple[Question, ...]
    grader: Grader
    stop: tuple[str, ...] = ()
    statement: AnswerStatement = field(default_factory=AnswerStatement)

    def __len__(self) -> int:
        return len(self.questions)


def load_dataset(
    spec: str, *, limit: int | None = None, seed: int = 0, fields: FieldMap | None = None
) -> Dataset:
    """A built-in task by name, or a JSONL file by path."""
    if limit is not None and limit < 1:
        raise DatasetError(f"limit must be >= 1, got {limit}")
    if spec in BUILTIN_DATASETS:
        return _load_builtin(spec, size=limit or 50, seed=seed)
    if spec in BUILTIN_MIXES:
        return _load_mix(spec, size=limit or 150, seed=seed)
    path = Path(spec)
    if path.suffix == ".jsonl" or path.exists():
        return load_jsonl(path, fields=fields, limit=limit)
    known = ", ".join(sorted([*BUILTIN_DATASETS, *BUILTIN_MIXES]))
    raise DatasetError(f"unknown dataset {spec!r}: not a built-in task ({known}) nor a .jsonl file")


#: The built-in tasks' prompt, then its alternates for ensemble sampling: the same two-example
#: format with other examples (so a wrong answer copied from one prompt's examples, such as the
#: "19" of the first, does not recur under the others).
ARITHMETIC_PROMPTS = (
    "arithmetic_fewshot",
    "arithmetic_fewshot_b",
    "arithmetic_fewshot_c",
    "arithmetic_fewshot_d",
)


def _load_builtin(name: str, *, size: int, seed: int) -> Dataset:
    import reasoning_gym  # deferred: importing it takes about two seconds

    task = BUILTIN_DATASETS[name]
    generated = reasoning_gym.create_dataset(task.generator, size=size, seed=seed, **task.config)
    questions = tuple(
        _arithmetic_question(f"{name}-{seed}-{index}", entry) for index, entry in enumerate(generated)
    )
    return Dataset(
        name=name,
        questions=questions,
        grader=ReasoningGymGrader(generated),
        stop=("\nQ:", "\n\n"),
        statement=ARITHMETIC_STATEMENT,
    )


def _arithmetic_question(identifier: str, entry: dict[str, Any]) -> Question:
    expression = str(entry["metadata"]["expression"])
    prompts = tuple(
        (Message("user", render_prompt(template, question=expression)),) for template in ARITHMETIC_PROMPTS
    )
    return Question(
        id=identifier,
        text=expression,
        gold=str(entry["answer"]),
        messages=prompts[0],
        alternates=prompts[1:],
        entry=dict(entry),
    )


def _load_mix(name: str, *, size: int, seed: int) -> Dataset:
    parts = BUILTIN_MIXES[name]
    share = -(-size // len(parts))
    loaded = [_load_builtin(part, size=share, seed=seed + 1000 * i) for i, part in enumerate(parts)]
    interleaved = [q for group in zip(*(d.questions for d in loaded), strict=False) for q in group][:size]
    graders = {d.name: d.grader for d in loaded}
    return Dataset(
        name=name,
        questions=tuple(interleaved),
        grader=_GraderByTask(graders),
        stop=loaded[0].stop,
        statement=loaded[0].statement,
    )


class _GraderByTask:
    """Grades each question with the grader of the built-in task it came from (its id prefix)."""

    def __init__(self, graders: dict[str, Grader]) -> None:
        self._graders = graders

    def grade(self, predicted: str | None, question: Question) -> float:
        task = question.id.rsplit("-", 2)[0]
        return self._graders[task].grade(predicted, question)


class ReasoningGymGrader:
    """Scores with the generating reasoning-gym dataset's own `score_answer`."""

    def __init__(self, generated: Any) -> None:
        self._generated = generated

    def grade(self, predicted: str | None, question: Question) -> float:
        return float(self._generated.score_answer(predicted, entry=question.entry))


def load_jsonl(path: Path, *, fields: FieldMap | None = None, limit: int | None = None) -> Dataset:
    """Questions from a JSONL file; errors name the file and line number."""
    if not path.is_file():
        raise DatasetError(f"dataset file {str(path)!r} does not exist")
    records = _read_records(path, limit)
    if not records:
        raise DatasetError(f"{path}: the file has no records")
    mapping = fields or _detect_layout(records[0][1], path)
    questions = tuple(_question_from(record, mapping, path, line) for line, record in records)
    return Dataset(name=path.stem, questions=questions, grader=MatchGrader())


def _read_records(path: Path, limit: int | None) -> list[tuple[int, dict[str, Any]]]:
    records: list[tuple[int, dict[str, Any]]] = []
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{path}:{line_number}: not valid JSON: {exc.msg}") from None
            if not isinstance(record, dict):
                raise DatasetError(
                    f"{path}:{line_number}: expected a JSON object, got {type(record).__name__}"
                )
            records.append((line_number, record))
            if limit is not None and len(records) >= limit:
                break
    return records


def _detect_layout(record: dict[str, Any], path: Path) -> FieldMap:
    for layout in _KNOWN_LAYOUTS:
        if all(name in record for name in (*layout.question, layout.answer)):
            return layout
    raise DatasetError(
        f"{path}: cannot tell which fields hold the question and answer (fields: {', '.join(record)}); "
        "pass --question-field and --answer-field"
    )


def _question_from(record: dict[str, Any], mapping: FieldMap, path: Path, line: int) -> Question:
    text = " ".join(str(_field(record, name, path, line)).strip() for name in mapping.question)
    gold = _gold_answer(_field(record, mapping.answer, path, line))
    identifier = str(_field(record, mapping.id, path, line)) if mapping.id else f"{path.stem}-{line}"
    messages = (Message("user", render_prompt("word_problem", question=text)),)
    return Question(id=identifier, text=text, gold=gold, messages=messages, entry=record)


def _field(record: dict[str, Any], name: str, path: Path, line: int) -> Any:
    if name not in record:
        present = ", ".join(record) or "none"
        raise DatasetError(f"{path}:{line}: no field {name!r} (fields present: {present})")
    return record[name]


def _gold_answer(value: Any) -> str:
    """GSM8K golds are worked solutions ending in `#### N`; keep just N. Numbers become strings."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    text = str(value)
    if "####" in text:
        return extract_answer(text) or text
    return text


def split_fields(text: str) -> tuple[str, ...]:
    """`Body,Question` → ("Body", "Question") for the CLI's --question-field."""
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    if not names:
        raise DatasetError("--question-field needs at least one field name")
    return names
