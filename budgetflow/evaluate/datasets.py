"""Datasets: built-in reasoning-gym tasks generated with a fixed seed, and any JSONL file.

Built-in names (see `BUILTIN_DATASETS`) generate short arithmetic items the embedded model can
partly solve, asked with a two-example few-shot prompt and graded by reasoning-gym's own scorer.
A JSONL file maps its fields with a `FieldMap`; without one, the common layouts (GSM8K, SVAMP,
MATH-500, AIME, AMC) are recognised from the first line, and each layout brings its prompt and
answer kind: numeric word problems (GSM8K, SVAMP) ask for `Answer: N` and are graded as numbers;
competition maths (MATH-500, AIME, AMC: `problem`, or `question` without GSM8K's `#### N`) ask for
`\\boxed{}` and are graded by math-verify. `PromptSpec` replaces the prompt (`--prompt-template`,
`--system`) for a user's own dataset.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from budgetflow.answers.extract import AnswerKind, extract_answer
from budgetflow.answers.grading import Grader, MatchGrader, MathGrader
from budgetflow.answers.statement import AnswerStatement
from budgetflow.errors import DatasetError
from budgetflow.evaluate.gym import GYM_PREFIX, GYM_STOP, ReasoningGymGrader, load_gym_task
from budgetflow.prompts import render_prompt
from budgetflow.types import Message, Question

__all__ = [
    "ARITHMETIC_STATEMENT",
    "BUILTIN_DATASETS",
    "AnswerStatement",
    "Dataset",
    "FieldMap",
    "PromptSpec",
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


@dataclass(frozen=True, slots=True, kw_only=True)
class PromptSpec:
    """How each question is asked: `template` is a prompt's text with `{question}` where the
    question goes (None: the dataset's own prompt); `system`, when given, is a system message
    sent before it."""

    template: str | None = None
    system: str | None = None

    def __post_init__(self) -> None:
        if self.template is not None and "{question}" not in self.template:
            raise DatasetError(
                "the prompt template has no {question} placeholder: the question would be lost"
            )

    @classmethod
    def from_file(cls, path: Path, *, system: str | None = None) -> PromptSpec:
        """The template in `path`; errors name the file."""
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise DatasetError(f"--prompt-template {str(path)!r}: cannot read it ({exc})") from None
        if "{question}" not in text:
            raise DatasetError(f"--prompt-template {str(path)!r}: no {{question}} placeholder in the file")
        return cls(template=text, system=system)

    def messages(self, question: str, default_template: str) -> tuple[Message, ...]:
        text = question.strip()
        user = Message(
            "user",
            self.template.replace("{question}", text)
            if self.template is not None
            else render_prompt(default_template, question=text),
        )
        return (user,) if self.system is None else (Message("system", self.system), user)


@dataclass(frozen=True, slots=True, kw_only=True)
class Layout:
    """A JSONL layout: its fields, the prompt its questions are asked with and its answer kind."""

    fields: FieldMap
    prompt: str
    kind: AnswerKind


_WORD_PROBLEM = Layout(
    fields=FieldMap(question=("question",), answer="answer"), prompt="word_problem", kind="number"
)
_COMPETITION = Layout(
    fields=FieldMap(question=("question",), answer="answer"), prompt="math_problem", kind="math"
)
_KNOWN_LAYOUTS = (
    _WORD_PROBLEM,  # GSM8K: the answer is a worked solution ending in `#### N`
    Layout(fields=FieldMap(question=("problem",), answer="answer"), prompt="math_problem", kind="math"),
    Layout(
        fields=FieldMap(question=("Body", "Question"), answer="Answer"), prompt="word_problem", kind="number"
    ),
)
#: JSONL questions' stop strings: the prompts end with `Problem: …`; a model that goes on to
#: invent the next problem is cut there.
JSONL_STOP = ("\nProblem:",)


#: reasoning-gym tasks' replies read "Answer: 12", as their few-shot examples do.
GYM_STATEMENT = AnswerStatement(answer="Answer: {answer}")
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
    answer_kind: AnswerKind = "text"

    def __len__(self) -> int:
        return len(self.questions)

    def extract(self, text: str) -> str | None:
        """The answer a completion states, read as this dataset's kind of answer."""
        return extract_answer(text, self.answer_kind)


def load_dataset(
    spec: str,
    *,
    limit: int | None = None,
    seed: int = 0,
    fields: FieldMap | None = None,
    prompt: PromptSpec | None = None,
) -> Dataset:
    """A built-in task by name, or a JSONL file by path; `prompt` replaces how questions are asked."""
    if limit is not None and limit < 1:
        raise DatasetError(f"limit must be >= 1, got {limit}")
    if spec in BUILTIN_DATASETS or spec in BUILTIN_MIXES:
        loaded = (
            _load_builtin(spec, size=limit or 50, seed=seed)
            if spec in BUILTIN_DATASETS
            else _load_mix(spec, size=limit or 150, seed=seed)
        )
        return loaded if prompt is None else _asked_with(loaded, prompt)
    if spec.startswith(GYM_PREFIX):
        task = load_gym_task(spec, size=limit or 50, seed=seed)
        loaded = Dataset(
            name=spec,
            questions=task.questions,
            grader=task.grader,
            stop=GYM_STOP,
            statement=GYM_STATEMENT,
            answer_kind=task.kind,
        )
        return loaded if prompt is None else _asked_with(loaded, prompt)
    path = Path(spec)
    if path.suffix == ".jsonl" or path.exists():
        return load_jsonl(path, fields=fields, limit=limit, prompt=prompt)
    known = ", ".join(sorted([*BUILTIN_DATASETS, *BUILTIN_MIXES]))
    raise DatasetError(
        f"unknown dataset {spec!r}: not a built-in task ({known}), a reasoning-gym task "
        "(rg:NAME[:key=value,...]) nor a .jsonl file"
    )


#: The built-in tasks' prompt, then its alternates for ensemble sampling: the same two-example
#: format with other examples (so a wrong answer copied from one prompt's examples, such as the
#: "19" of the first, does not recur under the others).
ARITHMETIC_PROMPTS = (
    "arithmetic_fewshot",
    "arithmetic_fewshot_b",
    "arithmetic_fewshot_c",
    "arithmetic_fewshot_d",
)


def _asked_with(dataset: Dataset, prompt: PromptSpec) -> Dataset:
    """`dataset` with every question asked by `prompt`: its template (one prompt, no ensemble
    alternates) or, with only a system message, the question's own prompts after it."""

    def asked(question: Question) -> Question:
        if prompt.template is not None:
            return replace(question, messages=prompt.messages(question.text, ""), alternates=())
        system = () if prompt.system is None else (Message("system", prompt.system),)
        return replace(
            question,
            messages=(*system, *question.messages),
            alternates=tuple((*system, *alternate) for alternate in question.alternates),
        )

    return replace(dataset, questions=tuple(asked(q) for q in dataset.questions))


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
        answer_kind="number",
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
        answer_kind=loaded[0].answer_kind,
    )


class _GraderByTask:
    """Grades each question with the grader of the built-in task it came from (its id prefix)."""

    def __init__(self, graders: dict[str, Grader]) -> None:
        self._graders = graders

    async def grade(self, predicted: str | None, question: Question) -> float:
        task = question.id.rsplit("-", 2)[0]
        return await self._graders[task].grade(predicted, question)


def load_jsonl(
    path: Path, *, fields: FieldMap | None = None, limit: int | None = None, prompt: PromptSpec | None = None
) -> Dataset:
    """Questions from a JSONL file; errors name the file and line number."""
    if not path.is_file():
        raise DatasetError(f"dataset file {str(path)!r} does not exist")
    records = _read_records(path, limit)
    if not records:
        raise DatasetError(f"{path}: the file has no records")
    layout = _layout(records[0], fields, path)
    asking = prompt or PromptSpec()
    questions = tuple(_question_from(record, layout, asking, path, line) for line, record in records)
    grader: Grader = MathGrader() if layout.kind == "math" else MatchGrader()
    return Dataset(
        name=path.stem, questions=questions, grader=grader, stop=JSONL_STOP, answer_kind=layout.kind
    )


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


def _layout(first: tuple[int, dict[str, Any]], fields: FieldMap | None, path: Path) -> Layout:
    """The layout of a file from its first record: the named `fields` (asked as competition
    maths), else a known layout; a gold answer ending in `#### N` makes it a word problem."""
    line, record = first
    layout = _detect_layout(record, path) if fields is None else replace(_COMPETITION, fields=fields)
    if "####" in str(_field(record, layout.fields.answer, path, line)):
        return replace(_WORD_PROBLEM, fields=layout.fields)
    if layout is _WORD_PROBLEM:  # `question` and `answer` without `#### N`: AMC's layout
        return _COMPETITION
    return layout


def _detect_layout(record: dict[str, Any], path: Path) -> Layout:
    for layout in _KNOWN_LAYOUTS:
        if all(name in record for name in (*layout.fields.question, layout.fields.answer)):
            return layout
    raise DatasetError(
        f"{path}: cannot tell which fields hold the question and answer (fields: {', '.join(record)}); "
        "pass --question-field and --answer-field"
    )


def _question_from(
    record: dict[str, Any], layout: Layout, prompt: PromptSpec, path: Path, line: int
) -> Question:
    mapping = layout.fields
    text = " ".join(str(_field(record, name, path, line)).strip() for name in mapping.question)
    gold = _gold_answer(_field(record, mapping.answer, path, line))
    identifier = str(_field(record, mapping.id, path, line)) if mapping.id else f"{path.stem}-{line}"
    messages = prompt.messages(text, layout.prompt)
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
        return extract_answer(text, "number") or text
    return text


def split_fields(text: str) -> tuple[str, ...]:
    """`Body,Question` → ("Body", "Question") for the CLI's --question-field."""
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    if not names:
        raise DatasetError("--question-field needs at least one field name")
    return names
