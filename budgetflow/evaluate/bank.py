"""Sample banks: K recorded samples (and one greedy answer) per question, replayed by allocators.

One JSON object per line:

    {"id", "question", "gold",
     "greedy": {"answer", "correct", "completion_tokens"} | null,
     "samples": [{"answer", "correct", "completion_tokens", "seconds"}, ...],
     "temperature": T | null}

A sample may also carry "mean_logprob" (the mean log-probability of its tokens, recorded when the
backend reports it), which confidence-weighted voting uses, and "verifier_score" (any verifier's
score of its answer, higher is better: `budgetflow bank score` adds the model's own likelihood of
the answer), which verifier-weighted voting uses. Banks from other sources in the same
format load unchanged; `load_bank` names the line and field of anything malformed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from budgetflow.answers.equivalence import normalize_answer
from budgetflow.backends.base import Backend
from budgetflow.errors import DatasetError
from budgetflow.evaluate.datasets import Dataset
from budgetflow.events import EventStream
from budgetflow.journal import RecordedStep
from budgetflow.runtime.context import RunContext, Unit
from budgetflow.runtime.scheduler import run_units
from budgetflow.strategies.verifiers import likelihood_scores
from budgetflow.types import Message, Question, Request, SamplingParams

__all__ = ["BankQuestion", "BankSample", "load_bank", "optional_number", "record_bank", "write_bank"]


@dataclass(frozen=True, slots=True, kw_only=True)
class BankSample:
    answer: str | None
    correct: bool
    completion_tokens: int
    seconds: float = 0.0
    mean_logprob: float | None = None
    verifier_score: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class BankQuestion:
    id: str
    question: str
    gold: str
    greedy: BankSample | None
    samples: tuple[BankSample, ...]
    #: The samples' temperature, when the recorder wrote it (`bank tune` chooses among banks by it).
    temperature: float | None = None


def write_bank(path: Path, questions: list[BankQuestion]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(path.suffix + ".tmp")
    with temporary.open("w", encoding="utf-8") as handle:
        for question in questions:
            handle.write(json.dumps(asdict(question)) + "\n")
    temporary.replace(path)


def append_bank_line(path: Path, question: BankQuestion) -> None:
    """Append one question to a bank file (JSON lines), flushed at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(asdict(question)) + "\n")


def load_bank(path: Path) -> list[BankQuestion]:
    if not path.is_file():
        raise DatasetError(f"bank file {str(path)!r} does not exist")
    questions: list[BankQuestion] = []
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if line.strip():
                questions.append(_parse_line(line, path, line_number))
    if not questions:
        raise DatasetError(f"{path}: the bank has no questions")
    return questions


def _parse_line(line: str, path: Path, line_number: int) -> BankQuestion:
    where = f"{path}:{line_number}"
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{where}: not valid JSON: {exc.msg}") from None
    if not isinstance(record, dict):
        raise DatasetError(f"{where}: expected a JSON object")
    for name in ("id", "question", "gold", "samples"):
        if name not in record:
            raise DatasetError(f"{where}: no field {name!r}")
    if not isinstance(record["samples"], list) or not record["samples"]:
        raise DatasetError(f"{where}: 'samples' must be a non-empty list")
    samples = tuple(_sample(s, f"{where}: samples[{i}]") for i, s in enumerate(record["samples"]))
    greedy = record.get("greedy")
    return BankQuestion(
        id=str(record["id"]),
        question=str(record["question"]),
        gold=str(record["gold"]),
        greedy=None if greedy is None else _sample(greedy, f"{where}: greedy"),
        samples=samples,
        temperature=optional_number(record.get("temperature"), f"{where}: temperature"),
    )


def _sample(value: Any, where: str) -> BankSample:
    if not isinstance(value, dict):
        raise DatasetError(f"{where}: expected an object")
    for name in ("answer", "correct", "completion_tokens"):
        if name not in value:
            raise DatasetError(f"{where}: no field {name!r}")
    tokens = value["completion_tokens"]
    if not isinstance(tokens, int) or tokens < 0:
        raise DatasetError(f"{where}: completion_tokens must be a whole number >= 0, got {tokens!r}")
    answer = value["answer"]
    return BankSample(
        answer=None if answer is None else str(answer),
        correct=bool(value["correct"]),
        completion_tokens=tokens,
        seconds=float(value.get("seconds", 0.0)),
        mean_logprob=optional_number(value.get("mean_logprob"), f"{where}: mean_logprob"),
        verifier_score=optional_number(value.get("verifier_score"), f"{where}: verifier_score"),
    )


def optional_number(value: Any, where: str) -> float | None:
    """`value` as a float, None for null; `DatasetError` naming `where` for anything else."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DatasetError(f"{where} must be a number or null, got {value!r}")
    return float(value)


async def record_bank(
    dataset: Dataset,
    backend: Backend,
    *,
    k: int,
    sampling: SamplingParams,
    temperature: float,
    concurrency: int = 4,
    on_question: Callable[[BankQuestion], None] | None = None,
    ensemble: bool = False,
    verify: bool = False,
    events: EventStream | None = None,
    recorded: Mapping[tuple[str, int], RecordedStep] | None = None,
) -> list[BankQuestion]:
    """Draw one greedy answer and `k` samples at `temperature` for every question of `dataset`.

    Each question is a unit of one `RunContext` (seeds by the run's seed policy, requests metered
    and on its event stream). With `ensemble`, the samples are spread round-robin over the
    question's prompts (`Question.prompts`); the greedy answer always comes from its own prompt.
    With `verify`, the likelihood verifier scores every answer right after its question's samples
    (the backend must score text: `Backend.score_continuations`), as `budgetflow bank score`
    would later. With `events` (a journaled stream) and `recorded` (what the journal holds of
    this run), a resumed recording answers its finished calls from the journal."""
    context = RunContext(backend, seed=sampling.seed, events=events, recorded=recorded)
    params = replace(sampling, stop=sampling.stop or dataset.stop, logprobs=True)

    async def one(question: Question, unit: Unit) -> BankQuestion:
        greedy = await _draw(unit, dataset, question, question.messages, params, temperature=0.0, n=1)
        shares = question.prompt_shares(k) if ensemble else [(question.messages, k)]
        samples = []
        for messages, count in shares:
            samples += await _draw(
                unit, dataset, question, messages, params, temperature=temperature, n=count
            )
        entry = BankQuestion(
            id=question.id,
            question=question.text,
            gold=question.gold,
            greedy=greedy[0],
            samples=tuple(samples),
            temperature=temperature,
        )
        if verify:
            entry = await with_scores(entry, dataset, question, unit.journaled())
        if on_question is not None:
            on_question(entry)
        return entry

    return await run_units(
        context,
        dataset.questions,
        one,
        unit_id=lambda q: q.id,
        kind="bank",
        concurrency=concurrency,
        pace=False,
    )


async def _draw(
    unit: Unit,
    dataset: Dataset,
    question: Question,
    messages: tuple[Message, ...],
    sampling: SamplingParams,
    *,
    temperature: float,
    n: int,
) -> list[BankSample]:
    started = time.perf_counter()
    request = Request(messages=messages, sampling=replace(sampling, temperature=temperature), n=n)
    response = await unit.draw(request, shrink=False)
    assert response is not None, "a bank recording has no budget to refuse it"
    seconds = (time.perf_counter() - started) / n
    drawn = []
    for completion in response.completions:
        answer = dataset.extract(completion.text)
        drawn.append(
            BankSample(
                answer=answer,
                correct=await dataset.grader.grade(answer, question) >= 1.0,
                completion_tokens=completion.completion_tokens,
                seconds=seconds,
                mean_logprob=completion.mean_logprob,
            )
        )
    return drawn


async def score_bank(
    bank: list[BankQuestion],
    dataset: Dataset,
    backend: Backend,
    *,
    on_question: Callable[[BankQuestion], None] | None = None,
) -> list[BankQuestion]:
    """The bank with every sample's and greedy answer's `verifier_score` set (None where no answer
    was stated). Bank questions are matched to `dataset` questions by id."""
    by_id = {question.id: question for question in dataset.questions}
    missing = [entry.id for entry in bank if entry.id not in by_id]
    if missing:
        raise DatasetError(
            f"{len(missing)} bank question(s) are not in dataset {dataset.name!r} (first: {missing[0]!r}); "
            "score a bank with the dataset it was recorded from"
        )
    scored = []
    for entry in bank:
        scored_entry = await with_scores(entry, dataset, by_id[entry.id], backend)
        scored.append(scored_entry)
        if on_question is not None:
            on_question(scored_entry)
    return scored


async def with_scores(
    entry: BankQuestion, dataset: Dataset, question: Question, backend: Backend
) -> BankQuestion:
    """One bank question with its answers' verifier scores (asked with `question`'s prompt)."""
    drawn = [*entry.samples, *([entry.greedy] if entry.greedy else [])]
    answers = [s.answer for s in drawn if s.answer is not None]
    scores = await likelihood_scores(backend, dataset.statement, question, answers)
    return replace(
        entry,
        greedy=_with_score(entry.greedy, scores) if entry.greedy else None,
        samples=tuple(_with_score(sample, scores) for sample in entry.samples),
    )


def _with_score(sample: BankSample, scores: dict[str, float]) -> BankSample:
    score = None if sample.answer is None else scores[normalize_answer(sample.answer)]
    return replace(sample, verifier_score=score)
