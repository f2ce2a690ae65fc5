"""`Budgeted`: every request reserves its worst case in a ledger before it is sent."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator, Sequence

from budgetflow.backends.base import Backend, ScoredContinuations, StreamTail
from budgetflow.backends.wrappers.base import Wrapper
from budgetflow.backends.wrappers.dispatch import mark_sent, was_sent
from budgetflow.budget import Ledger
from budgetflow.errors import BackendError, BudgetExceeded
from budgetflow.types import JsonFields, Message, Request, Response, Spend, TextPart, Usage
from budgetflow.usage import NO_USAGE

__all__ = ["Budgeted", "prompt_token_bound", "request_prompt_bound"]

#: Tokens a chat template may add around each message, and once per prompt.
_PER_MESSAGE_OVERHEAD = 8
_PER_PROMPT_OVERHEAD = 16


def prompt_token_bound(
    messages: tuple[Message, ...],
    *,
    prefill: str = "",
    media_tokens: int = 4096,
    passthrough: JsonFields = (),
) -> int:
    """An upper bound on prompt tokens without a tokenizer: byte-level BPE never emits more
    tokens than the text has UTF-8 bytes; template markers and media parts are added on top.
    An assistant `prefill` (a trace to continue) is prompt too, with its own message overhead, and
    so are verbatim fields (tool definitions, tool calls), counted by their JSON bytes."""
    total = _PER_PROMPT_OVERHEAD + _fields_bytes(passthrough)
    if prefill:
        total += _PER_MESSAGE_OVERHEAD + len(prefill.encode("utf-8"))
    for message in messages:
        total += _PER_MESSAGE_OVERHEAD + _fields_bytes(message.fields)
        if isinstance(message.content, str):
            total += len(message.content.encode("utf-8"))
            continue
        for part in message.content:
            total += len(part.text.encode("utf-8")) if isinstance(part, TextPart) else media_tokens
    return total


def _fields_bytes(fields: JsonFields) -> int:
    return sum(len(name) + len(value.encode("utf-8")) for name, value in fields)


def request_prompt_bound(request: Request, *, media_tokens: int = 4096) -> int:
    """`prompt_token_bound` of everything `request` sends as prompt: its messages, its prefill
    and its verbatim fields (tool definitions, a response schema)."""
    return prompt_token_bound(
        request.messages,
        prefill=request.prefill,
        media_tokens=media_tokens,
        passthrough=request.passthrough,
    )


#: Stacks known to have no exact prompt count: a unit's `Budgeted` over a run's shared stack then
#: goes straight to the byte bound instead of asking (and failing) once per unit.
_UNCOUNTED: weakref.WeakSet[Backend] = weakref.WeakSet()


class Budgeted(Wrapper):
    """Reserve (prompt + max_tokens x n, its cost, one call) before sending; settle after.

        The prompt's size is the backend's exact count when it offers `count_prompt_tokens`
        (the embedded model does), else `request_prompt_bound` (messages and prefill). A request
        that does not fit raises `BudgetExceeded` and is never sent. A reply's `unreported` work
        (cancelled first-finish racers) is settled with its usage. A failure settles the usage the
        error reports, or releases; a request cancelled in flight (a quorum reached, a sibling failed,
    a client gone) is charged its worst case, since the endpoint may bill all it generated. A
        deadline in the ledger chain is a cancel scope: a request still running when it passes is
        cancelled and raises `BudgetExceeded`.
    """

    def __init__(self, inner: Backend, ledger: Ledger, *, media_tokens: int = 4096) -> None:
        super().__init__(inner)
        self.ledger = ledger
        self._media_tokens = media_tokens
        self._exact_counts = inner not in _UNCOUNTED

    async def _worst_case(self, request: Request) -> tuple[str, Spend]:
        """The model that prices `request`, and the most it can cost (every prompt copy included)."""
        return self._priced_worst_case(request, await self._prompt_tokens(request))

    def _priced_worst_case(self, request: Request, prompt_tokens: int) -> tuple[str, Spend]:
        model = request.model or self.inner.model_name
        amount = self.ledger.worst_case(
            model=model,
            prompt_tokens=prompt_tokens * self.inner.prompt_copies(request),
            max_tokens=request.sampling.max_tokens,
            n=request.n,
        )
        return model, amount

    async def complete(self, request: Request) -> Response:
        if self._exact_counts:
            model, amount = await self._worst_case(request)
        else:  # the byte bound needs no await
            model, amount = self._priced_worst_case(request, self._prompt_bound(request))
        reservation = self.ledger.reserve(amount)
        mark_sent()  # until a limiter beneath says the call waits
        try:
            if self.ledger.has_deadline:
                response = await self._within_deadline(request)
            else:
                response = await self.inner.complete(request)
        except BackendError as error:
            if error.usage is not None:
                self.ledger.settle(reservation, self.ledger.actual(model=model, usage=error.usage))
            else:
                self.ledger.release(reservation)
            raise
        except asyncio.CancelledError:
            # stopped mid-flight (a quorum reached, a sibling failed, a client gone): the endpoint
            # may have generated up to the worst case and bill it, so the ledger says so; a call
            # still waiting for a limiter's slot was never sent
            if was_sent():
                self.ledger.settle(reservation, reservation.amount)
            else:
                self.ledger.release(reservation)
            raise
        except Exception:
            self.ledger.release(reservation)
            raise
        charged = response.usage if response.unreported is NO_USAGE else response.usage + response.unreported
        self.ledger.settle(reservation, self.ledger.actual(model=model, usage=charged))
        return response

    async def score_continuations(self, request: Request, continuations: Sequence[str]) -> list[float]:
        """Score through the ledger: reserve the prompt (as many times as the backend reads it)
        and every continuation as prompt tokens, plus what the backend generates to score them
        (`Backend.scoring_cost`); settle to what the endpoint reported when it did, else to the
        exact counts when the backend has a tokenizer. The embedded model's prompt is charged once
        even when it finds it cached: a remote endpoint re-reads it."""
        model = request.model or self.inner.model_name
        prompt = await self._prompt_tokens(request)
        copies, generated = self.inner.scoring_cost(len(continuations))
        bounds = [prompt_token_bound((), prefill=text) for text in continuations]
        reserved = self.ledger.worst_case(
            model=model, prompt_tokens=prompt * copies + sum(bounds), max_tokens=generated, n=1
        )
        reservation = self.ledger.reserve(reserved)
        try:
            scores = await self.inner.score_continuations(request, continuations)
        except BaseException:
            self.ledger.release(reservation)
            raise
        if isinstance(scores, ScoredContinuations):
            usage = scores.usage
        else:
            counted = [
                await self._text_tokens(text, bound)
                for text, bound in zip(continuations, bounds, strict=True)
            ]
            usage = Usage(prompt_tokens=prompt * copies + sum(counted), completion_tokens=generated)
        self.ledger.settle(reservation, self.ledger.actual(model=model, usage=usage))
        return scores

    async def _text_tokens(self, text: str, bound: int) -> int:
        try:
            return min(await self.inner.count_tokens(text), bound)
        except NotImplementedError:
            return bound

    async def stream(self, request: Request) -> AsyncIterator[str]:
        """Stream through the ledger. It settles to the usage the stream's `StreamTail` reported;
        a stream without one settles conservatively: the prompt as reserved, and the streamed
        text's tokens counted by the backend's tokenizer when it has one, else the whole
        `max_tokens` reservation. A stream stopped after it generated something is charged its
        worst case (the endpoint may have gone on generating)."""
        model, amount = await self._worst_case(request)
        reservation = self.ledger.reserve(amount)
        pieces: list[str] = []
        reported: Usage | None = None
        try:
            async for delta in self.inner.stream(request):
                if isinstance(delta, StreamTail):
                    reported = delta.usage
                pieces.append(delta)
                yield delta
        except BaseException:
            if reported is not None:
                self.ledger.settle(reservation, self.ledger.actual(model=model, usage=reported))
            elif pieces:
                self.ledger.settle(reservation, amount)
            else:
                self.ledger.release(reservation)
            raise
        usage = reported or await self._streamed_usage("".join(pieces), amount)
        self.ledger.settle(reservation, self.ledger.actual(model=model, usage=usage))

    async def _streamed_usage(self, text: str, amount: Spend) -> Usage:
        try:
            generated = min(await self.inner.count_tokens(text), amount.completion_tokens)
        except NotImplementedError:
            generated = amount.completion_tokens
        return Usage(amount.prompt_tokens, generated)

    async def _within_deadline(self, request: Request) -> Response:
        """The inner call, cancelled when the nearest deadline of the ledger chain passes."""
        remaining = self.ledger.remaining_seconds()
        if remaining is None:
            return await self.inner.complete(request)
        scope = asyncio.timeout(max(0.0, remaining))
        try:
            async with scope:
                return await self.inner.complete(request)
        except TimeoutError:
            if not scope.expired():
                raise
            raise BudgetExceeded(
                f"budget {self.ledger.name!r}: deadline passed with a request in flight; it was cancelled",
                limit_name="deadline_seconds",
                limit=self.ledger.budget.deadline_seconds or 0.0,
                needed=remaining,
            ) from None

    async def _prompt_tokens(self, request: Request) -> int:
        if self._exact_counts:
            try:
                return await self.inner.count_prompt_tokens(request)
            except NotImplementedError:
                self._exact_counts = False
                _UNCOUNTED.add(self.inner)
        return self._prompt_bound(request)

    def _prompt_bound(self, request: Request) -> int:
        return request_prompt_bound(request, media_tokens=self._media_tokens)

    def with_ledger(self, ledger: Ledger) -> Budgeted:
        """The same backend charging another ledger (e.g. one question's child ledger)."""
        clone = Budgeted(self.inner, ledger, media_tokens=self._media_tokens)
        clone._exact_counts = self._exact_counts
        return clone
