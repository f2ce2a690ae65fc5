"""Verifiers for `best_of_n`, `beam` and `tree`: a Python function, an LLM judge, a reward
endpoint; and the likelihood verifier the allocators weigh votes with.

The likelihood verifier (`likelihood_scores`) ranks candidate answers by how likely the model is
to state each one directly after the question (`AnswerStatement`: for the built-in arithmetic
tasks, the log-probability of " 11." after "7 + 4 ="). Scoring costs prompt tokens only: the
candidates of a question are decoded side by side on its cached prompt, one batch, no sampling.
Wrong answers that many samples copy from a few-shot example (SmolLM2's "19") often score low,
which is where a verifier-weighted vote beats a plain one (see `Voting.verifier_weight`).
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable, Sequence

import aiohttp

from budgetflow.answers.equivalence import normalize_answer
from budgetflow.answers.statement import AnswerStatement
from budgetflow.backends.base import Backend
from budgetflow.errors import (
    BackendTimeout,
    ConfigError,
    EndpointUnreachable,
    MalformedReply,
    error_for_status,
)
from budgetflow.prompts import load_prompt
from budgetflow.types import Message, Question, Request, SamplingParams

__all__ = ["FunctionVerifier", "JudgeVerifier", "RewardEndpointVerifier", "likelihood_scores"]

ScoreFunction = Callable[[tuple[Message, ...], str], float | Awaitable[float]]


class FunctionVerifier:
    """Scores with `function(messages, completion)` (sync or async)."""

    def __init__(self, function: ScoreFunction) -> None:
        self._function = function

    async def score(self, messages: tuple[Message, ...], completion: str, *, backend: Backend) -> float:
        result = self._function(messages, completion)
        if inspect.isawaitable(result):
            result = await result
        return float(result)


class JudgeVerifier:
    """Asks a model whether the solution is correct, `samples` times; the score is the share of "yes".

    Uses the question's own backend (so judging is budgeted) unless `backend` is given."""

    def __init__(self, *, samples: int = 3, temperature: float = 0.7, backend: Backend | None = None) -> None:
        self.samples = samples
        self.temperature = temperature
        self._backend = backend

    async def score(self, messages: tuple[Message, ...], completion: str, *, backend: Backend) -> float:
        question = "\n".join(m.text for m in messages if m.role == "user")
        prompt = load_prompt("judge").replace("{question}", question).replace("{solution}", completion)
        sampling = SamplingParams(temperature=self.temperature, max_tokens=4)
        judge = self._backend or backend
        response = await judge.complete(Request.from_prompt(prompt, sampling=sampling, n=self.samples))
        yes = sum(text.strip().lower().startswith("yes") for text in response.texts)
        return yes / len(response.texts)


class RewardEndpointVerifier:
    """POSTs `{"messages": [...], "completion": "..."}` to `url` and reads `{"score": float}`."""

    def __init__(self, url: str, *, timeout: float = 30.0, api_key: str | None = None) -> None:
        self.url = url
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    async def score(self, messages: tuple[Message, ...], completion: str, *, backend: Backend) -> float:
        payload = {
            "messages": [{"role": m.role, "content": m.text} for m in messages],
            "completion": completion,
        }
        try:
            async with (
                aiohttp.ClientSession(timeout=self._timeout, headers=self._headers) as session,
                session.post(self.url, json=payload) as reply,
            ):
                body = await reply.text()
                if reply.status >= 300:
                    raise error_for_status(reply.status, body, backend=f"reward:{self.url}")
        except aiohttp.ClientConnectionError as exc:
            raise EndpointUnreachable(f"reward endpoint {self.url}: {exc}", backend=self.url) from exc
        except TimeoutError as exc:
            raise BackendTimeout(f"reward endpoint {self.url}: no reply in time", backend=self.url) from exc
        try:
            return float(json.loads(body)["score"])
        except (ValueError, KeyError, TypeError) as exc:
            raise MalformedReply(
                f"reward endpoint {self.url}: expected {{'score': number}}, got {body[:200]!r}",
                backend=self.url,
            ) from exc


async def likelihood_scores(
    backend: Backend, statement: AnswerStatement, question: Question, answers: Sequence[str]
) -> dict[str, float]:
    """Each distinct normalised answer's log-probability as the model's statement of it, asked
    with the question's own prompt. `ConfigError` if the backend cannot score text."""
    distinct = sorted({normalize_answer(answer) for answer in answers})
    if not distinct:
        return {}
    request = Request(messages=question.messages, prefill=statement.opening_for(question.text))
    try:
        scores = await backend.score_continuations(request, statement.texts(distinct))
    except NotImplementedError as exc:
        raise ConfigError(f"the likelihood verifier needs a backend that scores text: {exc}") from None
    return dict(zip(distinct, scores, strict=True))
