"""`budgetflow serve`: an OpenAI-compatible HTTP server (aiohttp) in front of one upstream.

Routes: `POST /v1/chat/completions`, `GET /v1/models`, `GET /health`, `GET /openapi.json`.
With a key store every request needs `Authorization: Bearer <key>` (401 otherwise); its budget
is reserved before anything is sent and settled after (429 with `Retry-After` when nothing fits);
a store that cannot be read refuses every request (503: fail closed). Upstream failures are 502
(504 for a timeout) with the upstream's status in the body. A client that disconnects cancels the
request's work, and its reservation is settled to what was actually spent.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

from aiohttp import web

from budgetflow.backends.base import Backend
from budgetflow.backends.wrappers import ConcurrencyLimit
from budgetflow.budget import Budget, Price
from budgetflow.errors import BackendError, BackendTimeout, BudgetExceeded, HTTPStatusError, UserInputError
from budgetflow.events import Event
from budgetflow.server.chat import ChatResult, ChatRunner, Progress, progress_of
from budgetflow.server.keys import Grant, KeyInfo, KeyStore, Refusal, StoreUnavailable
from budgetflow.server.openapi import openapi_schema
from budgetflow.server.routing import ADAPTIVE_SPEC
from budgetflow.server.wire import (
    ChatRequest,
    InvalidRequest,
    completion_body,
    finish_reason,
    parse_chat_request,
    reply_message,
    usage_json,
)
from budgetflow.types import Spend, Usage

__all__ = ["ApiError", "ServerSettings", "create_app"]

log = logging.getLogger("budgetflow.server")
T = TypeVar("T")
_LISTED_PREFIXES: Final = ("single", "vote-8", "early_stop-16", "best_of_n-4", "first_finish-8", "adaptive")


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerSettings:
    """What the server allows and defaults to."""

    upstream_model: str = "embedded"
    default_max_tokens: int = 512
    max_tokens_cap: int = 8192
    request_budget_cap: int = 262_144
    body_limit_bytes: int = 16 * 1024 * 1024
    upstream_concurrency: int = 64
    prices: dict[str, Price] = field(default_factory=dict)


class ApiError(Exception):
    """An error reply: HTTP status, OpenAI error type, message, the field at fault."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        kind: str = "invalid_request_error",
        param: str | None = None,
        retry_after: float | None = None,
        upstream_status: int | None = None,
        details: dict[str, int | None] | None = None,
    ) -> None:
        super().__init__(message)
        self.details = details
        self.status = status
        self.kind = kind
        self.param = param
        self.retry_after = retry_after
        self.upstream_status = upstream_status

    def response(self) -> web.Response:
        error: dict[str, Any] = {"message": str(self), "type": self.kind, "param": self.param, "code": None}
        if self.upstream_status is not None:
            error["upstream_status"] = self.upstream_status
        if self.details:
            error["budget"] = self.details
        headers = {} if self.retry_after is None else {"Retry-After": str(max(1, round(self.retry_after)))}
        return web.json_response({"error": error}, status=self.status, headers=headers)


class _RequestRate:
    """Per-key requests per minute, refused at once (no queueing): a sliding one-minute window."""

    def __init__(self) -> None:
        self._sent: dict[str, list[float]] = {}

    def retry_after(self, key: KeyInfo, now: float) -> float | None:
        if key.requests_per_minute is None:
            return None
        window = [t for t in self._sent.get(key.id, []) if now - t < 60.0]
        if len(window) >= key.requests_per_minute:
            self._sent[key.id] = window
            return 60.0 - (now - window[0])
        window.append(now)
        self._sent[key.id] = window
        return None


class _Keys:
    """The key store on its own thread (SQLite blocks; the event loop must not)."""

    def __init__(self, store: KeyStore) -> None:
        self.store = store
        self._thread = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="budgetflow-keys"
        )

    async def call(self, function: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, function)

    def close(self) -> None:
        self._thread.shutdown(wait=True)
        self.store.close()


class BudgetflowServer:
    """The request handlers over one upstream backend and an optional key store."""

    def __init__(self, upstream: Backend, settings: ServerSettings, store: KeyStore | None) -> None:
        self.settings = settings
        self.shared = ConcurrencyLimit(upstream, limit=settings.upstream_concurrency)
        self.runner = ChatRunner(
            self.shared, prices=settings.prices, request_budget_cap=settings.request_budget_cap
        )
        self.keys = None if store is None else _Keys(store)
        self.rate = _RequestRate()

    def application(self) -> web.Application:
        app = web.Application(client_max_size=self.settings.body_limit_bytes, middlewares=[_errors])
        app.router.add_post("/v1/chat/completions", self.chat_completions)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/health", self.health)
        app.router.add_get("/openapi.json", self.openapi)
        app.on_cleanup.append(self._close)
        return app

    async def _close(self, app: web.Application) -> None:
        await self.shared.aclose()
        if self.keys is not None:
            self.keys.close()

    async def openapi(self, request: web.Request) -> web.Response:
        return web.json_response(openapi_schema())

    async def health(self, request: web.Request) -> web.Response:
        store = "none"
        if self.keys is not None:
            keys = self.keys
            try:
                await keys.call(keys.store.list)
                store = "ok"
            except StoreUnavailable as error:
                return web.json_response({"status": "unavailable", "keys": str(error)}, status=503)
        return web.json_response({"status": "ok", "upstream": self.settings.upstream_model, "keys": store})

    async def models(self, request: web.Request) -> web.Response:
        await self._authenticate(request)
        upstream = self.settings.upstream_model
        names = [upstream, *(f"{prefix}/{upstream}" for prefix in _LISTED_PREFIXES)]
        data = [{"id": name, "object": "model", "created": 0, "owned_by": "budgetflow"} for name in names]
        return web.json_response({"object": "list", "data": data, "adaptive": ADAPTIVE_SPEC})

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        key = await self._authenticate(request)
        if key is not None and (wait := self.rate.retry_after(key, time.monotonic())) is not None:
            raise ApiError(
                429,
                f"this key allows {key.requests_per_minute:g} requests a minute",
                kind="rate_limit_error",
                retry_after=wait,
            )
        chat = parse_chat_request(
            await _json_body(request),
            default_max_tokens=self.settings.default_max_tokens,
            max_tokens_cap=self.settings.max_tokens_cap,
        )
        self._check_model(chat)
        self.runner.check(chat)
        worst = self.runner.worst_case(chat)
        grant = await self._reserve(key, chat, worst)
        budget = _budget(grant, worst)
        request_id = f"chatcmpl-{uuid.uuid4().hex}"
        spent: list[Spend] = []
        try:
            if chat.stream:
                return await self._stream(request, chat, request_id, budget, spent)
            result = await self.runner.run(chat, request_id=request_id, budget=budget)
            spent.append(result.spent)
            return web.json_response(self._body(chat, request_id, result))
        finally:
            await self._settle(grant, spent)

    def _body(self, chat: ChatRequest, request_id: str, result: ChatResult) -> dict[str, Any]:
        if not result.choices:
            raise ApiError(
                429,
                f"the request's budget ({result.extension['budget_tokens']} tokens) could not fit one sample",
                kind="budget_exceeded",
            )
        return completion_body(
            request_id=request_id,
            model=chat.model,
            choices=result.choices,
            usage=result.usage,
            extension=result.extension,
        )

    async def _stream(
        self, request: web.Request, chat: ChatRequest, request_id: str, budget: Budget, spent: list[Spend]
    ) -> web.StreamResponse:
        """Server-sent events: `single` relays the upstream's deltas as they arrive; a strategy
        sends a `: budgetflow progress …` comment as each call finishes, then the chosen answer."""
        reply = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await reply.prepare(request)
        chunks = _Chunks(request_id, chat.model)
        await _send(reply, chunks.delta({"role": "assistant", "content": ""}))
        try:
            if chat.served.single and chat.n == 1 and not chat.uses_tools:
                await self._relay(reply, chunks, chat, request_id, budget, spent)
            else:
                await self._progress_then_answer(reply, chunks, chat, request_id, budget, spent)
        except (BackendError, UserInputError, BudgetExceeded) as error:
            failure = _api_error(error)
            await _send(reply, {"error": {"message": str(failure), "type": failure.kind}})
        await reply.write(b"data: [DONE]\n\n")
        await reply.write_eof()
        return reply

    async def _relay(
        self,
        reply: web.StreamResponse,
        chunks: _Chunks,
        chat: ChatRequest,
        request_id: str,
        budget: Budget,
        spent: list[Spend],
    ) -> None:
        async for delta in self.runner.stream_single(
            chat, request_id=request_id, budget=budget, spent_out=spent
        ):
            await _send(reply, chunks.delta({"content": delta}))
        used = spent[-1]
        await _send(reply, chunks.finish("stop", {"strategy": "single"}))
        if chat.include_usage:
            await _send(reply, chunks.usage(used.prompt_tokens, used.completion_tokens))

    async def _progress_then_answer(
        self,
        reply: web.StreamResponse,
        chunks: _Chunks,
        chat: ChatRequest,
        request_id: str,
        budget: Budget,
        spent: list[Spend],
    ) -> None:
        progress = Progress()
        updates: asyncio.Queue[None] = asyncio.Queue()

        def on_event(event: Event) -> None:
            if progress_of(progress, event):
                updates.put_nowait(None)

        work = asyncio.ensure_future(
            self.runner.run(chat, request_id=request_id, budget=budget, on_event=on_event)
        )
        try:
            while not work.done():
                waiter = asyncio.ensure_future(updates.get())
                await asyncio.wait({work, waiter}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                if waiter.done() and not waiter.cancelled():
                    await reply.write(_progress_comment(progress))
            result = work.result()
        finally:
            if not work.done():
                work.cancel()
                await asyncio.gather(work, return_exceptions=True)
        spent.append(result.spent)
        for index, choice in enumerate(result.choices):
            message = reply_message(choice)
            for piece in _pieces(message.pop("content") or ""):
                await _send(reply, chunks.delta({"content": piece}, index=index))
            if len(message) > 1:  # tool calls and other verbatim fields, in one delta
                await _send(
                    reply, chunks.delta({k: v for k, v in message.items() if k != "role"}, index=index)
                )
            await _send(reply, chunks.finish(finish_reason(choice), result.extension, index=index))
        if chat.include_usage:
            await _send(reply, chunks.usage(result.usage.prompt_tokens, result.usage.completion_tokens))

    async def _authenticate(self, request: web.Request) -> KeyInfo | None:
        if self.keys is None:
            return None
        header = request.headers.get("Authorization", "")
        secret = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else ""
        if not secret:
            raise ApiError(
                401, "missing API key: send 'Authorization: Bearer <key>'", kind="authentication_error"
            )
        keys = self.keys
        key = await keys.call(lambda: keys.store.authenticate(secret))
        if key is None:
            raise ApiError(401, "invalid or revoked API key", kind="authentication_error")
        return key

    def _check_model(self, chat: ChatRequest) -> None:
        upstream = self.settings.upstream_model
        if self.settings.upstream_model == "embedded" and chat.served.upstream_model != "embedded":
            raise ApiError(
                404,
                f"model {chat.served.upstream_model!r} is not served here; the upstream is 'embedded' "
                f"(try 'vote-8/{upstream}')",
                kind="not_found_error",
                param="model",
            )

    async def _reserve(self, key: KeyInfo | None, chat: ChatRequest, worst: int) -> Grant | None:
        if key is None or self.keys is None:
            return None
        minimum = self.runner.minimum(chat)
        pico, minimum_pico = 0, 0
        if key.budget_pico is not None:
            price = self.settings.prices.get(chat.served.upstream_model)
            if price is None:
                raise ApiError(
                    503,
                    f"this key has a dollar budget, but the server has no price for "
                    f"{chat.served.upstream_model!r} (start it with --price)",
                    kind="server_error",
                )
            rate = max(price.cost_pico(1, 0), price.cost_pico(0, 1))
            pico, minimum_pico = worst * rate, minimum * rate
        keys, key_id = self.keys, key.id
        outcome = await keys.call(
            lambda: keys.store.reserve(
                key_id, tokens=worst, minimum_tokens=minimum, pico=pico, minimum_pico=minimum_pico
            )
        )
        if isinstance(outcome, Refusal):
            raise ApiError(
                429,
                outcome.message,
                kind="insufficient_quota",
                retry_after=outcome.retry_after,
                details=outcome.details,
            )
        return outcome

    async def _settle(self, grant: Grant | None, spent: list[Spend]) -> None:
        """Settle the key's reservation to what the request spent; shielded, so a client that
        disconnects (cancelling the handler) still has its spend recorded."""
        if grant is None or self.keys is None:
            return
        keys = self.keys
        used = spent[-1] if spent else Spend()
        settle = keys.call(lambda: keys.store.settle(grant.id, tokens=used.total_tokens, pico=used.cost_pico))
        await asyncio.shield(settle)


def _budget(grant: Grant | None, worst: int) -> Budget:
    if grant is None:
        return Budget(total_tokens=worst)
    tokens = worst if grant.tokens is None else grant.tokens
    cost = None if grant.pico is None else grant.pico / 10**12
    return Budget(total_tokens=tokens, cost=cost)


class _Chunks:
    """`chat.completion.chunk` objects of one response."""

    def __init__(self, request_id: str, model: str) -> None:
        self.base = {
            "id": request_id,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
        }

    def delta(self, delta: dict[str, Any], *, index: int = 0) -> dict[str, Any]:
        return {**self.base, "choices": [{"index": index, "delta": delta, "finish_reason": None}]}

    def finish(self, reason: str, extension: dict[str, Any], *, index: int = 0) -> dict[str, Any]:
        return {
            **self.base,
            "choices": [{"index": index, "delta": {}, "finish_reason": reason}],
            "budgetflow": extension,
        }

    def usage(self, prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
        return {**self.base, "choices": [], "usage": usage_json(Usage(prompt_tokens, completion_tokens))}


async def _send(reply: web.StreamResponse, data: dict[str, Any]) -> None:
    await reply.write(b"data: " + json.dumps(data).encode() + b"\n\n")


def _progress_comment(progress: Progress) -> bytes:
    state = {
        "calls": progress.calls,
        "tokens": progress.usage.prompt_tokens + progress.usage.completion_tokens,
    }
    return b": budgetflow progress " + json.dumps(state).encode() + b"\n\n"


def _pieces(text: str, size: int = 24) -> list[str]:
    """The answer in short pieces, each ending at a space where possible."""
    pieces: list[str] = []
    start = 0
    while start < len(text):
        end = min(len(text), start + size)
        space = text.rfind(" ", start + 1, end)
        if end < len(text) and space > start:
            end = space
        pieces.append(text[start:end])
        start = end
    return pieces


async def _json_body(request: web.Request) -> object:
    raw = await request.read()
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InvalidRequest(f"the request body is not JSON: {error}") from None


def _api_error(error: Exception) -> ApiError:
    if isinstance(error, ApiError):
        return error
    if isinstance(error, InvalidRequest):
        return ApiError(400, str(error), param=error.param)
    if isinstance(error, UserInputError):
        return ApiError(400, str(error))
    if isinstance(error, StoreUnavailable):
        return ApiError(503, f"the key store is unavailable; refusing requests: {error}", kind="server_error")
    if isinstance(error, BudgetExceeded):
        return ApiError(429, str(error), kind="budget_exceeded")
    if isinstance(error, BackendTimeout):
        return ApiError(504, f"the upstream did not answer in time: {error}", kind="upstream_error")
    if isinstance(error, BackendError):
        status = error.status if isinstance(error, HTTPStatusError) else None
        return ApiError(502, f"the upstream failed: {error}", kind="upstream_error", upstream_status=status)
    log.exception("unexpected error", exc_info=error)
    return ApiError(500, f"internal error: {type(error).__name__}", kind="server_error")


@web.middleware
async def _errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as error:
        if error.status < 400:
            raise
        reply = ApiError(error.status, error.reason or "error", kind="invalid_request_error").response()
        for name in ("Allow",):  # a 405 says which methods the path takes (RFC 9110)
            if name in error.headers:
                reply.headers[name] = error.headers[name]
        return reply
    except Exception as error:  # every failure becomes a JSON error reply, never a traceback page
        return _api_error(error).response()


def create_app(
    upstream: Backend, settings: ServerSettings | None = None, store: KeyStore | None = None
) -> web.Application:
    """The aiohttp application serving `upstream` (run it with `aiohttp.web.AppRunner`, with
    `handler_cancellation=True` so that a client disconnect cancels the work)."""
    return BudgetflowServer(upstream, settings or ServerSettings(), store).application()
