"""A likelihood verifier: the model's own log-probability of stating each candidate answer.

Sampling finds candidate answers; the verifier ranks them by how likely the model is to state
each one directly after the question (`AnswerStatement`: for the built-in arithmetic tasks, the
log-probability of " 11." after "7 + 4 ="). Scoring costs prompt tokens only: the candidates of a
question are decoded side by side on its cached prompt, one batch, no sampling. Wrong answers
that many samples copy from a few-shot example (SmolLM2's "19") often score low, which is where
a verifier-weighted vote beats a plain one (see `Voting.verifier_weight`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from budgetflow.allocate.bank import BankQuestion, BankSample
from budgetflow.answers.equivalence import normalize_answer
from budgetflow.backends.base import Backend
from budgetflow.errors import ConfigError, DatasetError
from budgetflow.evaluate.datasets import Dataset
from budgetflow.types import Question, Request

__all__ = ["likelihood_scores", "score_bank", "statement_texts", "with_scores"]


async def likelihood_scores(
    backend: Backend, dataset: Dataset, question: Question, answers: Sequence[str]
) -> dict[str, float]:
    """Each distinct normalised answer's log-probability as the model's statement of it, asked
    with the question's own prompt. `ConfigError` if the backend cannot score text."""
    distinct = sorted({normalize_answer(answer) for answer in answers})
    if not distinct:
        return {}
    opening = dataset.statement.opening.format(question=question.text)
    request = Request(messages=question.messages, prefill=opening)
    try:
        scores = await backend.score_continuations(request, statement_texts(dataset, distinct))
    except NotImplementedError as exc:
        raise ConfigError(f"the likelihood verifier needs a backend that scores text: {exc}") from None
    return dict(zip(distinct, scores, strict=True))


def statement_texts(dataset: Dataset, answers: Sequence[str]) -> list[str]:
    """The texts the verifier scores for `answers` (normalised), in order."""
    return [dataset.statement.answer.format(answer=answer) for answer in answers]


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
    scores = await likelihood_scores(backend, dataset, question, answers)
    return replace(
        entry,
        greedy=_with_score(entry.greedy, scores) if entry.greedy else None,
        samples=tuple(_with_score(sample, scores) for sample in entry.samples),
    )


def _with_score(sample: BankSample, scores: dict[str, float]) -> BankSample:
    score = None if sample.answer is None else scores[normalize_answer(sample.answer)]
    return replace(sample, verifier_score=score)
