"""Fakes shipped in the package, for unit tests and documentation examples only.

`ScriptedBackend` replays queued replies; `FunctionBackend` computes each completion with a
Python function. Both count "tokens" as whitespace-separated words.
"""

from __future__ import annotations

import asyncio
import inspect
from collections import deque
from collections.abc import Awaitable, Callable, Iterable

from budgetflow.backends.base import Backend, count_words
from budgetflow.errors import ConfigError
from budgetflow.types import Completion, FinishReason, Request, Response, Usage

__all__ = ["FunctionBackend", "ScriptedBackend"]

Reply = str | Completion | BaseException


def _prompt_tokens(request: Request) -> int:
    return sum(count_words(message.text) for message in request.messages)


def _as_completion(reply: str | Completion, request: Request) -> Completion:
    if isinstance(reply, Completion):
        return reply
    text, finish = _apply_stop(reply, request.sampling.stop)
    words = text.split()
    if len(words) > request.sampling.max_tokens:
        return Completion(
            text=" ".join(words[: request.sampling.max_tokens]),
            finish_reason="length",
            completion_tokens=request.sampling.max_tokens,
        )
    return Completion(text=text, finish_reason=finish, completion_tokens=len(words))


def _apply_stop(text: str, stops: tuple[str, ...]) -> tuple[str, FinishReason]:
    cut = min((text.find(s) for s in stops if s in text), default=-1)
    return (text[:cut], "stop") if cut >= 0 else (text, "stop")


def _response(completions: list[Completion], request: Request, name: str) -> Response:
    """The reply for `completions`; with `keep_first=k`, the k shortest finish first and the
    others are stopped at that moment, having generated as many tokens as the k-th."""
    spent = sum(c.completion_tokens for c in completions)
    if request.keep_first is not None:
        order = sorted(range(len(completions)), key=lambda i: completions[i].completion_tokens)
        kept = sorted(order[: request.keep_first])
        cutoff = completions[order[request.keep_first - 1]].completion_tokens
        spent = sum(min(c.completion_tokens, cutoff) for c in completions)
        completions = [completions[i] for i in kept]
    usage = Usage(_prompt_tokens(request), spent)
    return Response(completions=tuple(completions), usage=usage, model=name)


class ScriptedBackend(Backend):
    """Answers with queued replies, one per sample, in order.

    A queued exception is raised instead of answering. When the queue runs dry the backend
    raises `ConfigError` (a test asked for more than it scripted)::

        backend = ScriptedBackend(["Answer: 4", "Answer: 5"])
        response = await backend.complete(Request.from_prompt("2+2?", n=2))
    """

    name = "scripted"

    def __init__(self, replies: Iterable[Reply] = (), *, delay: float = 0.0) -> None:
        self._queue: deque[Reply] = deque(replies)
        self._delay = delay
        self.requests: list[Request] = []

    def enqueue(self, *replies: Reply) -> None:
        self._queue.extend(replies)

    @property
    def remaining(self) -> int:
        return len(self._queue)

    async def complete(self, request: Request) -> Response:
        self.requests.append(request)
        if self._delay:
            await asyncio.sleep(self._delay)
        completions: list[Completion] = []
        for _ in range(request.n):
            if not self._queue:
                raise ConfigError(f"ScriptedBackend ran out of replies after {len(self.requests)} requests")
            reply = self._queue.popleft()
            if isinstance(reply, BaseException):
                raise reply
            completions.append(_as_completion(reply, request))
        return _response(completions, request, self.name)


SampleFunction = Callable[[Request, int], str | Completion | Awaitable[str | Completion]]


class FunctionBackend(Backend):
    """Computes each sample with `function(request, sample_index)` (sync or async)::

    backend = FunctionBackend(lambda request, i: f"Answer: {i}")
    """

    name = "function"

    def __init__(self, function: SampleFunction) -> None:
        self._function = function
        self.requests: list[Request] = []

    async def complete(self, request: Request) -> Response:
        self.requests.append(request)
        completions: list[Completion] = []
        for index in range(request.n):
            result = self._function(request, index)
            if inspect.isawaitable(result):
                result = await result
            completions.append(_as_completion(result, request))
        return _response(completions, request, self.name)
