"""`Wrapper`: a backend around another backend. Cross-cutting concerns subclass it.

A wrapper forwards *every* capability of the `Backend` contract — the required `complete` and
each optional one (streaming, prompt and token counting, scoring text, closing) — so wrapping a
backend never loses a capability. Subclasses override the methods their concern touches.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from budgetflow.backends.base import Backend
from budgetflow.types import Request, Response

__all__ = ["Wrapper"]


class Wrapper(Backend):
    """Delegates everything to `inner`; subclasses override `complete` to add one concern."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.name = inner.name

    async def complete(self, request: Request) -> Response:
        return await self.inner.complete(request)

    def stream(self, request: Request) -> AsyncIterator[str]:
        return self.inner.stream(request)

    @property
    def model_name(self) -> str:
        return self.inner.model_name

    def prompt_copies(self, request: Request) -> int:
        return self.inner.prompt_copies(request)

    async def count_prompt_tokens(self, request: Request) -> int:
        return await self.inner.count_prompt_tokens(request)

    async def count_tokens(self, text: str) -> int:
        return await self.inner.count_tokens(text)

    async def score_continuations(self, request: Request, continuations: Sequence[str]) -> list[float]:
        return await self.inner.score_continuations(request, continuations)

    def scoring_cost(self, continuations: int) -> tuple[int, int]:
        return self.inner.scoring_cost(continuations)

    async def aclose(self) -> None:
        await self.inner.aclose()
