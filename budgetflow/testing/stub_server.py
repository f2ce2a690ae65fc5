"""A minimal OpenAI-compatible chat-completions server on 127.0.0.1, for tests and benchmarks.

It spends no model time: each choice's text comes from `reply(payload, index)`. Queued `Fault`s
are served first, one per HTTP request, to inject errors (status codes with `Retry-After`,
malformed or truncated bodies, delays, dropped connections). `max_choices` imitates servers that
ignore `n` (llama.cpp's returns one choice). Every received payload is kept in `payloads` unless
`keep_payloads=False` (the standalone benchmark server).

    async with StubOpenAIServer(reply=lambda payload, i: "Answer: 4") as server:
        backend = OpenAICompatibleBackend(base_url=server.base_url, model="stub")
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from aiohttp import web

__all__ = ["Fault", "StubOpenAIServer"]

ReplyFunction = Callable[[dict[str, Any], int], str]
#: Extra fields of a reply message (`tool_calls`, say) for a payload and choice index.
MessageFields = Callable[[dict[str, Any], int], dict[str, Any]]


@dataclass(frozen=True, slots=True, kw_only=True)
class Fault:
    """One injected misbehaviour, served instead of a normal reply to one request."""

    status: int = 200
    body: str | None = None
    retry_after: str | None = None
    delay: float = 0.0
    drop_connection: bool = False
    truncate: bool = False


def _default_reply(payload: dict[str, Any], index: int) -> str:
    return f"Answer: {index}"


class StubOpenAIServer:
    """Serve `/v1/chat/completions` on 127.0.0.1 at a free port while the context is open."""

    def __init__(
        self,
        *,
        reply: ReplyFunction = _default_reply,
        max_choices: int | None = None,
        delay: float | Callable[[dict[str, Any]], float] = 0.0,
        keep_payloads: bool = True,
        message_fields: MessageFields | None = None,
        stream_gate: asyncio.Event | None = None,
        stream_usage: bool = True,
        cancel_on_disconnect: bool = False,
    ) -> None:
        self._reply = reply
        self._message_fields = message_fields
        #: When set, a stream sends its first word and waits for the gate before the rest.
        self.stream_gate = stream_gate
        #: Whether a stream reports its usage when asked (`stream_options.include_usage`).
        self._stream_usage = stream_usage
        #: Whether a request stops when its client hangs up (as vLLM's do), or is served to the end
        #: and counted as served (as a server that never notices does).
        self._cancel_on_disconnect = cancel_on_disconnect
        self._keep_payloads = keep_payloads
        self._max_choices = max_choices
        self._delay = delay
        self._faults: deque[Fault] = deque()
        self._runner: web.AppRunner | None = None
        self.payloads: list[dict[str, Any]] = []
        self.served_requests = 0
        #: Requests whose client hung up while they were being served.
        self.cancelled_requests = 0
        #: Usage of every complete (not truncated) reply sent: what a client should have been charged.
        self.served_prompt_tokens = 0
        self.served_completion_tokens = 0
        #: Set whenever a request arrives; clear it to wait for the next one.
        self.request_received = asyncio.Event()
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def inject(self, *faults: Fault) -> None:
        self._faults.extend(faults)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=self._cancel_on_disconnect)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> StubOpenAIServer:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        payload = await request.json()
        self.served_requests += 1
        if self._keep_payloads:
            self.payloads.append(payload)
        self.request_received.set()
        fault = self._faults.popleft() if self._faults else None
        delay = fault.delay if fault is not None else self._delay
        if callable(delay):  # a delay chosen per request (out-of-order replies)
            delay = delay(payload)
        if delay:
            try:
                await asyncio.sleep(delay)
            except asyncio.CancelledError:  # the client closed the connection
                self.cancelled_requests += 1
                raise
        if fault is not None and fault.drop_connection:
            assert request.transport is not None
            request.transport.close()
            return web.Response(status=200)
        if fault is not None and (fault.status != 200 or fault.body is not None):
            headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
            return web.Response(status=fault.status, text=fault.body or "{}", headers=headers)
        completion = self._completion(payload)
        if payload.get("stream"):
            asked = (payload.get("stream_options") or {}).get("include_usage")
            usage = completion["usage"] if asked and self._stream_usage else None
            return await self._stream(request, completion["choices"][0]["message"]["content"], usage)
        body = json.dumps(completion)
        if fault is not None and fault.truncate:
            body = body[: len(body) // 2]
        else:
            self.served_prompt_tokens += completion["usage"]["prompt_tokens"]
            self.served_completion_tokens += completion["usage"]["completion_tokens"]
        return web.Response(status=200, text=body, content_type="application/json")

    async def _stream(
        self, request: web.Request, text: str, usage: dict[str, int] | None
    ) -> web.StreamResponse:
        """Server-sent events, one word (with its leading space) per event, the usage when asked
        for (`stream_options.include_usage`), then [DONE]."""
        reply = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await reply.prepare(request)
        words = text.split(" ")
        for index, word in enumerate(words):
            delta = word if index == 0 else " " + word
            event = {"choices": [{"index": 0, "delta": {"content": delta}, "finish_reason": None}]}
            await reply.write(f"data: {json.dumps(event)}\n\n".encode())
            if index == 0 and self.stream_gate is not None:
                await self.stream_gate.wait()
        if usage is not None:
            self.served_prompt_tokens += usage["prompt_tokens"]
            self.served_completion_tokens += usage["completion_tokens"]
            await reply.write(f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n".encode())
        await reply.write(b"data: [DONE]\n\n")
        await reply.write_eof()
        return reply

    def _fields(self, payload: dict[str, Any], index: int) -> dict[str, Any]:
        return {} if self._message_fields is None else self._message_fields(payload, index)

    def _completion(self, payload: dict[str, Any]) -> dict[str, Any]:
        n = int(payload.get("n", 1))
        if self._max_choices is not None:
            n = min(n, self._max_choices)
        texts = [self._reply(payload, index) for index in range(n)]
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in payload.get("messages", []))
        completion_tokens = sum(len(text.split()) for text in texts)
        return {
            "id": f"stub-{self.served_requests}",
            "object": "chat.completion",
            "model": payload.get("model", "stub"),
            "choices": [
                _choice(i, t, with_logprobs=bool(payload.get("logprobs")), fields=self._fields(payload, i))
                for i, t in enumerate(texts)
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }


def _choice(index: int, text: str, *, with_logprobs: bool, fields: dict[str, Any]) -> dict[str, Any]:
    """One choice; with logprobs, each word is a token of log-probability -len(word) / 10."""
    choice: dict[str, Any] = {
        "index": index,
        "message": {"role": "assistant", "content": text, **fields},
        "finish_reason": "tool_calls" if "tool_calls" in fields else "stop",
    }
    if with_logprobs:
        tokens = [{"token": word, "logprob": -len(word) / 10} for word in text.split()]
        choice["logprobs"] = {"content": tokens}
    return choice


async def _serve_forever(delay: float) -> None:
    # A benchmark target: it keeps no payloads, so it does not slow down as a long run goes on.
    server = StubOpenAIServer(
        reply=lambda payload, index: "The answer is 42. Answer: 42", keep_payloads=False, delay=delay
    )
    await server.start()
    print(server.port, flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":  # python -m budgetflow.testing.stub_server [SECONDS]: print the port, serve
    import sys

    asyncio.run(_serve_forever(float(sys.argv[1]) if len(sys.argv) > 1 else 0.0))
