"""The backend contract: one required async method, `complete`.

Everything else a backend may offer (streaming, token counting, scoring text) is optional and raises
`NotImplementedError` naming the class where unsupported. Cancellation is asyncio cancellation of
`complete`: a backend that can stop work mid-generation does so when its task is cancelled.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Sequence
from types import TracebackType

from budgetflow.types import Request, Response, Usage

__all__ = ["Backend", "ScoredContinuations", "StreamTail", "count_words"]


class StreamTail(str):
    """The last item a stream may yield: empty text carrying the usage the endpoint reported for
    the whole stream. Readers that join the deltas lose nothing; budgets settle to `usage`."""

    usage: Usage

    def __new__(cls, usage: Usage) -> StreamTail:
        tail = super().__new__(cls, "")
        tail.usage = usage
        return tail


class ScoredContinuations(list[float]):
    """Scores (a list, one per continuation) with the usage the endpoint reported for them."""

    def __init__(self, scores: Sequence[float], usage: Usage) -> None:
        super().__init__(scores)
        self.usage = usage


class Backend(abc.ABC):
    """Produces completions. Subclasses implement `complete` and nothing else is required."""

    #: A short name used in errors, events and tables.
    name: str = "backend"

    @abc.abstractmethod
    async def complete(self, request: Request) -> Response:
        """Return `request.returned` completions with the usage they cost.

        That is `request.n` completions, or with `request.keep_first = k` the first `k` of `n`
        started samples to finish (the rest stopped, their tokens counted in usage). Implementations
        return exactly that many or raise a `BackendError`.
        """

    async def stream(self, request: Request) -> AsyncIterator[str]:
        """Yield text deltas of a single completion as they are generated (optional); a backend
        that knows what the stream cost yields a `StreamTail` last."""
        raise NotImplementedError(f"{type(self).__name__} does not support streaming")
        yield ""  # pragma: no cover - makes this an async generator for type checkers

    @property
    def model_name(self) -> str:
        """The model this backend serves, as a price table names it (defaults to `name`)."""
        return self.name

    def prompt_copies(self, request: Request) -> int:
        """How many times `request` may pay for its prompt: 1 when its `n` samples share one
        prompt, up to `n` when they may be sent as separate requests. Budgets reserve that many."""
        return 1

    async def count_prompt_tokens(self, request: Request) -> int:
        """Exactly how many prompt tokens `request` will cost on this backend (optional)."""
        raise NotImplementedError(f"{type(self).__name__} does not count prompt tokens")

    async def count_tokens(self, text: str) -> int:
        """Count tokens as this backend's model would (optional). Async: a local model tokenizes on
        its own worker, never on the event loop's thread."""
        raise NotImplementedError(f"{type(self).__name__} does not count tokens")

    async def score_continuations(self, request: Request, continuations: Sequence[str]) -> list[float]:
        """The model's log-probability of each text as the reply to `request`'s messages (the sum
        over its tokens; optional): what a likelihood verifier ranks answers by. A backend that
        knows what the scoring cost may return `ScoredContinuations` (a list with `usage`)."""
        raise NotImplementedError(f"{type(self).__name__} does not score text")

    def scoring_cost(self, continuations: int) -> tuple[int, int]:
        """What scoring `continuations` texts pays beyond the texts themselves: how many times the
        prompt is read, and how many tokens are generated in all. Budgets reserve that much. A
        local model reads the prompt once and generates nothing."""
        return 1, 0

    async def aclose(self) -> None:  # noqa: B027 - optional hook, deliberately a no-op by default
        """Release connections, threads or model memory. Safe to call more than once."""

    async def __aenter__(self) -> Backend:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()


def count_words(text: str) -> int:
    """A stand-in token count for fakes: whitespace-separated words."""
    return len(text.split())
