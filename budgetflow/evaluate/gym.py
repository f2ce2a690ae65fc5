"""Any reasoning-gym task as a dataset: `rg:NAME` or `rg:NAME:key=value,key=value`.

`rg:leg_counting:min_animals=1,max_animals=2` generates `leg_counting` items with that
configuration (values read as JSON: numbers, lists, `true`; anything else is a string) at the
dataset's seed. Each question is asked with a two-example few-shot prompt whose examples are
items of the same task from another seed (`Q: …` then `Answer: …`; the model writes its own
`Answer:` line), and graded by the task's own
`score_answer`. The answer kind is "number" when every generated answer is a number, else "text".
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from budgetflow.answers.equivalence import parse_number
from budgetflow.answers.extract import AnswerKind
from budgetflow.errors import DatasetError
from budgetflow.types import Message, Question

__all__ = ["GYM_PREFIX", "GymTask", "ReasoningGymGrader", "load_gym_task", "parse_gym_spec"]

GYM_PREFIX = "rg:"
#: The few-shot examples come from this seed offset, so they never repeat a question.
_EXAMPLE_SEED_OFFSET = 7919
_EXAMPLES = 2
GYM_STOP = ("\nQ:", "\n\n")


class ReasoningGymGrader:
    """Scores with the generating reasoning-gym dataset's own `score_answer`."""

    def __init__(self, generated: Any) -> None:
        self._generated = generated

    async def grade(self, predicted: str | None, question: Question) -> float:
        return float(self._generated.score_answer(predicted, entry=question.entry))


@dataclass(frozen=True, slots=True, kw_only=True)
class GymTask:
    """A generated reasoning-gym task: its questions, grader and answer kind."""

    name: str
    questions: tuple[Question, ...]
    grader: ReasoningGymGrader
    kind: AnswerKind


def _question(identifier: str, entry: dict[str, Any], shots: str) -> Question:
    text = str(entry["question"]).strip()
    return Question(
        id=identifier,
        text=text,
        gold=str(entry["answer"]),
        messages=(Message("user", f"{shots}Q: {text}\n"),),
        entry=dict(entry),
    )


def parse_gym_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """`rg:NAME:k=v,k=v` → (NAME, {k: v}); errors name the spec and the part that is wrong."""
    body = spec.removeprefix(GYM_PREFIX)
    name, _, options = body.partition(":")
    config: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in _top_level_items(options))):
        key, equals, value = item.partition("=")
        if not equals or not key.strip():
            raise DatasetError(f"dataset {spec!r}: expected key=value, got {item!r}")
        config[key.strip()] = _value(value.strip())
    if not name:
        raise DatasetError(f"dataset {spec!r}: name a reasoning-gym task, e.g. rg:leg_counting")
    return name, config


def _top_level_items(text: str) -> list[str]:
    """`a=1,b=[1,2]` → ["a=1", "b=[1,2]"]: commas inside brackets stay with their value."""
    items, depth, start = [], 0, 0
    for index, char in enumerate(text):
        depth += (char in "[{") - (char in "]}")
        if char == "," and depth == 0:
            items.append(text[start:index])
            start = index + 1
    return [*items, text[start:]]


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def load_gym_task(spec: str, *, size: int, seed: int) -> GymTask:
    """`size` items of the task `spec` names, at `seed`."""
    import reasoning_gym  # deferred: importing it takes about two seconds
    from reasoning_gym.factory import DATASETS

    name, config = parse_gym_spec(spec)
    if name not in DATASETS:
        raise DatasetError(
            f"dataset {spec!r}: reasoning-gym has no task {name!r} (see reasoning_gym.factory)"
        )
    try:
        generated = reasoning_gym.create_dataset(name, size=size, seed=seed, **config)
        examples = reasoning_gym.create_dataset(
            name, size=_EXAMPLES, seed=seed + _EXAMPLE_SEED_OFFSET, **config
        )
    except (TypeError, ValueError, AssertionError) as exc:
        raise DatasetError(f"dataset {spec!r}: reasoning-gym refused the configuration: {exc}") from None
    shots = "".join(f"Q: {str(e['question']).strip()}\nAnswer: {e['answer']}\n\n" for e in examples)
    questions = tuple(_question(f"{name}-{seed}-{i}", entry, shots) for i, entry in enumerate(generated))
    numeric = all(parse_number(q.gold) is not None for q in questions)
    return GymTask(
        name=name,
        questions=questions,
        grader=ReasoningGymGrader(generated),
        kind="number" if numeric else "text",
    )
