"""OpenAI-compatible chat completions over HTTP (vLLM, SGLang, llama.cpp server, Ollama, hosted APIs).

The transport is aiohttp rather than the official SDK: on the hot path the SDK's httpx transport
sustains about a tenth of aiohttp's request rate on this machine (see benchmarks/). The engine owns
retries, so this backend makes exactly one attempt per HTTP request and maps failures to typed
errors by status code.

Some servers ignore `n` (llama.cpp's server returns one choice when asked for three). A reply with
fewer choices than asked is never passed on short: the rest are requested, one request per sample
with distinct seeds, and later requests fan out from the start.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import aiohttp
import yarl

from budgetflow.backends.base import Backend, ScoredContinuations, StreamTail
from budgetflow.backends.openai_scoring import (
    ChatRendering,
    cannot_score,
    continuation_score,
    render_chat,
    scoring_payload,
)
from budgetflow.concurrency import first_finished, run_all
from budgetflow.errors import (
    BackendError,
    BackendTimeout,
    ConfigError,
    EndpointUnreachable,
    MalformedReply,
    error_for_status,
)
from budgetflow.types import (
    AudioPart,
    Completion,
    ContentPart,
    ImagePart,
    JsonFields,
    Message,
    Request,
    Response,
    TextPart,
    Usage,
    VideoPart,
)

__all__ = ["OpenAICompatibleBackend"]

#: aiohttp's connection failures and timeouts, mapped to typed errors by `_transport_error`.
_TRANSPORT_FAILURES = (
    aiohttp.ClientConnectorError,
    aiohttp.ServerDisconnectedError,
    aiohttp.ClientPayloadError,
    aiohttp.ClientOSError,
    TimeoutError,
)

_FINISH_REASONS = {
    "stop": "stop",
    "length": "length",
    "eos": "stop",
    "stop_sequence": "stop",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
}


class OpenAICompatibleBackend(Backend):
    """Chat completions from any OpenAI-compatible endpoint.

    Args:
        base_url: the API root, e.g. ``http://127.0.0.1:8000/v1``.
        model: the model name sent with each request (a request's own `model` wins).
        api_key: the bearer token; when omitted it is read from the environment variable `api_key_env`.
        timeout: seconds allowed for one HTTP request, connection included.
        supports_n: whether the server honours `n`; ``None`` finds out from the first reply.
        chat_rendering: how `score_continuations` writes a chat as a completions prompt
            (`budgetflow.backends.openai_scoring`): ``"chatml"`` or ``"plain"``.
    """

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        timeout: float = 120.0,
        supports_n: bool | None = None,
        name: str | None = None,
        chat_rendering: ChatRendering = "chatml",
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"base_url must start with http:// or https://, got {base_url!r}")
        if timeout <= 0:
            raise ConfigError(f"timeout must be > 0, got {timeout}")
        self.base_url = base_url.rstrip("/")
        # parsed once: aiohttp would parse a string URL again on every request
        self._completions_url = yarl.URL(f"{self.base_url}/chat/completions")
        self._text_completions_url = yarl.URL(f"{self.base_url}/completions")
        self.chat_rendering = chat_rendering
        #: Whether the endpoint returns prompt log-probabilities; None until the first scoring call.
        self.scores_text: bool | None = None
        self.model = model
        self.name = name or f"openai:{model}"
        self.supports_n = supports_n
        self._api_key = api_key if api_key is not None else os.environ.get(api_key_env, "")
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    @property
    def model_name(self) -> str:
        return self.model

    def prompt_copies(self, request: Request) -> int:
        """First-finish races and servers not known to honour `n` send one request per sample."""
        fans_out = request.keep_first is not None or self.supports_n is not True
        return request.n if fans_out else 1

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            headers = {"Content-Type": "application/json"}
            if self._api_key:
                headers["Authorization"] = f"Bearer {self._api_key}"
            connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300)
            # no cookie jar: an inference API keeps no session state in cookies, and aiohttp's jar
            # filters and updates cookies on every request (~10 µs each, benchmarks/overhead.py)
            self._session = aiohttp.ClientSession(
                headers=headers,
                timeout=self._timeout,
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    async def complete(self, request: Request) -> Response:
        seed = _base_seed(request)
        if request.keep_first is not None:
            return await self._first_finished(request, seed)
        completions: list[Completion] = []
        usage = Usage()
        if request.n == 1 or self.supports_n is not False:
            first, usage = await self._post(request, n=request.n, seed=seed)
            completions.extend(first[: request.n])
            if request.n > 1 and self.supports_n is None:
                self.supports_n = len(first) >= request.n
        missing = request.n - len(completions)
        if missing > 0:
            seeds = [seed + len(completions) + i for i in range(missing)]
            for one, one_usage in await run_all(self._post_exact_one(request, s) for s in seeds):
                completions.append(one)
                usage = usage + one_usage
        return Response(completions=tuple(completions), usage=usage, model=request.model or self.model)

    async def stream(self, request: Request) -> AsyncIterator[str]:
        """Text deltas of one completion from the server's server-sent events (`n` must be 1),
        then a `StreamTail` with the usage the server reported (asked for with
        `stream_options.include_usage`; servers that ignore it send none, and budgets settle
        conservatively)."""
        if request.n != 1 or request.keep_first is not None:
            raise ConfigError("streaming returns one completion: use n=1 without keep_first")
        payload = {
            **self._payload(request, n=1, seed=_base_seed(request)),
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        url = self._completions_url
        with self._transport_errors(url):
            async with self._client().post(url, data=json.dumps(payload)) as reply:
                if reply.status >= 300:
                    raise await self._status_error(reply)
                async for raw in reply.content:
                    delta = _stream_delta(raw.decode("utf-8", errors="replace").strip(), self.name)
                    if delta is None:
                        return
                    if delta or isinstance(delta, StreamTail):
                        yield delta

    async def _first_finished(self, request: Request, seed: int) -> Response:
        """Start `n` one-sample requests; keep the first `keep_first` replies and close the other
        connections, which stops their generation on servers that notice (vLLM, llama.cpp).

        The closed racers' usage is never reported, yet servers bill what they generated: each is
        charged as `unreported` usage, conservatively — the prompt a finished racer reported and
        the whole `max_tokens`."""
        assert request.keep_first is not None
        posts = (self._post_exact_one(request, seed + i) for i in range(request.n))
        finished = await first_finished(posts, request.keep_first)
        usage = Usage()
        for _, one_usage in finished:
            usage = usage + one_usage
        cancelled = request.n - len(finished)
        prompt_each = usage.prompt_tokens // max(1, len(finished))
        unreported = Usage(prompt_each * cancelled, request.sampling.max_tokens * cancelled)
        completions = tuple(one for one, _ in finished)
        return Response(
            completions=completions, usage=usage, model=request.model or self.model, unreported=unreported
        )

    def scoring_cost(self, continuations: int) -> tuple[int, int]:
        """One completions request per continuation: the prompt read each time, one token generated."""
        return continuations, continuations

    async def score_continuations(self, request: Request, continuations: Sequence[str]) -> list[float]:
        """Each text's log-probability after the rendered chat, from `/v1/completions` with `echo`
        (`budgetflow.backends.openai_scoring`); the first call finds out whether the endpoint can."""
        prompt = render_chat(request.messages, request.prefill, self.chat_rendering)
        model = request.model or self.model
        texts, scored = list(continuations), []
        if self.scores_text is None and texts:  # probe with the first text before sending the rest
            scored.append(await self._score_one(model, prompt, texts.pop(0)))
            self.scores_text = True
        scored += await run_all(self._score_one(model, prompt, text) for text in texts)
        usage = sum((one_usage for _, one_usage in scored), Usage())
        return ScoredContinuations([score for score, _ in scored], usage)

    async def _score_one(self, model: str, prompt: str, continuation: str) -> tuple[float, Usage]:
        url = self._text_completions_url
        payload = json.dumps(scoring_payload(model, prompt, continuation)).encode()
        try:
            async with self._client().post(url, data=payload) as reply:
                if reply.status >= 300:
                    if self.scores_text is None:  # the probe: this endpoint cannot score
                        raise cannot_score(
                            self.name, str(url), f"HTTP {reply.status}: {(await reply.text())[:200]}"
                        )
                    raise await self._status_error(reply)
                body = await reply.read()
        except _TRANSPORT_FAILURES as exc:
            raise self._transport_error(url, exc) from exc
        return continuation_score(body, continuation, backend=self.name, url=str(url))

    async def _post_exact_one(self, request: Request, seed: int) -> tuple[Completion, Usage]:
        completions, usage = await self._post(request, n=1, seed=seed)
        return completions[0], usage

    async def _post(self, request: Request, *, n: int, seed: int) -> tuple[list[Completion], Usage]:
        payload = json.dumps(self._payload(request, n=n, seed=seed)).encode()
        url = self._completions_url
        try:
            async with self._client().post(url, data=payload) as reply:
                if reply.status >= 300:
                    raise await self._status_error(reply)
                body = await reply.read()  # JSON is UTF-8 (RFC 8259): no charset sniffing
        except _TRANSPORT_FAILURES as exc:
            raise self._transport_error(url, exc) from exc
        return _parse_reply(body, backend=self.name)

    async def _status_error(self, reply: aiohttp.ClientResponse) -> BackendError:
        """The typed error for a non-2xx reply (by status code, with Retry-After when given)."""
        body = await reply.text()
        retry_after = _parse_retry_after(reply.headers.get("Retry-After"))
        return error_for_status(reply.status, body, backend=self.name, retry_after=retry_after)

    @contextlib.contextmanager
    def _transport_errors(self, url: yarl.URL) -> Iterator[None]:
        """Map aiohttp's connection failures and timeouts to budgetflow's typed errors."""
        try:
            yield
        except _TRANSPORT_FAILURES as exc:
            raise self._transport_error(url, exc) from exc

    def _transport_error(self, url: yarl.URL, exc: BaseException) -> BackendError:
        """The typed error for a connection failure or timeout talking to `url` (written as the
        user gave it, not percent-encoded)."""
        shown = url.human_repr()
        if isinstance(exc, aiohttp.ClientConnectorError):
            return EndpointUnreachable(f"{self.name}: cannot connect to {shown}: {exc}", backend=self.name)
        if isinstance(exc, TimeoutError):
            return BackendTimeout(
                f"{self.name}: no reply from {shown} within {self._timeout.total} s", backend=self.name
            )
        return EndpointUnreachable(f"{self.name}: connection to {shown} dropped: {exc!r}", backend=self.name)

    def _payload(self, request: Request, *, n: int, seed: int) -> dict[str, Any]:
        sampling = request.sampling
        messages = [_message_json(m) for m in request.messages]
        if request.prefill:
            messages.append({"role": "assistant", "content": request.prefill})
        payload: dict[str, Any] = {
            "model": request.model or self.model,
            "messages": messages,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "max_tokens": sampling.max_tokens,
            "seed": seed,
        }
        if n > 1:
            payload["n"] = n
        if sampling.stop:
            payload["stop"] = list(sampling.stop)
        if sampling.logprobs:  # llama.cpp's server sends none unless top_logprobs >= 1
            payload["logprobs"] = True
            payload["top_logprobs"] = 1
        if request.prefill:  # vLLM / SGLang: continue the last assistant message instead of a new turn
            payload["continue_final_message"] = True
            payload["add_generation_prompt"] = False
        if request.thinking is not None:  # Qwen3-style templates on vLLM / SGLang
            payload["chat_template_kwargs"] = {"enable_thinking": request.thinking}
        payload.update(_fields_json(request.passthrough))
        return payload


def _base_seed(request: Request) -> int:
    """The request's seed, or a fresh random one: samples always get distinct, explicit seeds."""
    return request.sampling.seed if request.sampling.seed is not None else random.randrange(2**31)


def _message_json(message: Message) -> dict[str, Any]:
    if isinstance(message.content, str):
        body: dict[str, Any] = {"role": message.role, "content": message.content}
    else:
        body = {"role": message.role, "content": [_part_json(part) for part in message.content]}
    if message.fields:
        body.update(_fields_json(message.fields))
    return body


def _fields_json(fields: JsonFields) -> dict[str, Any]:
    return {name: json.loads(value) for name, value in fields}


def _part_json(part: ContentPart) -> dict[str, Any]:
    if isinstance(part, TextPart):
        return {"type": "text", "text": part.text}
    if isinstance(part, ImagePart):
        return {"type": "image_url", "image_url": {"url": part.url, "detail": part.detail}}
    if isinstance(part, AudioPart):
        return {"type": "input_audio", "input_audio": {"data": part.data, "format": part.format}}
    if isinstance(part, VideoPart):
        return {"type": "video_url", "video_url": {"url": part.url}}
    raise ConfigError(f"unknown content part {type(part).__name__}")


def _parse_retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _parse_reply(body: bytes | str, *, backend: str) -> tuple[list[Completion], Usage]:
    """Completions and usage from a chat-completions reply body, or `MalformedReply` saying why."""
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MalformedReply(
            f"{backend}: reply is not JSON ({exc}): {_shown(body)!r}", backend=backend
        ) from exc
    choices = data.get("choices") if isinstance(data, dict) else None
    if not isinstance(choices, list) or not choices:
        raise MalformedReply(f"{backend}: reply has no 'choices' list: {_shown(body)!r}", backend=backend)
    raw_usage = data.get("usage") or {}
    usage = Usage(int(raw_usage.get("prompt_tokens", 0)), int(raw_usage.get("completion_tokens", 0)))
    per_choice = usage.completion_tokens // len(choices)
    completions = [_parse_choice(choice, backend, per_choice) for choice in choices]
    if not raw_usage:
        raise MalformedReply(f"{backend}: reply has no 'usage'; budgets cannot be kept", backend=backend)
    return completions, usage


def _shown(body: bytes | str) -> str:
    """The start of a reply body, as text, for an error message."""
    text = body if isinstance(body, str) else body[:400].decode("utf-8", errors="replace")
    return text[:200]


def _parse_choice(choice: Any, backend: str, completion_tokens: int) -> Completion:
    message = choice.get("message") if isinstance(choice, dict) else None
    content = message.get("content") if isinstance(message, dict) else None
    fields = _reply_fields(message)
    if content is None and fields:  # a reply that only calls tools
        content = ""
    if not isinstance(content, str):
        raise MalformedReply(f"{backend}: a choice lacks message.content: {choice!r:.200}", backend=backend)
    reason = _FINISH_REASONS.get(str(choice.get("finish_reason")), "stop")
    mean_logprob = _mean_logprob(choice.get("logprobs"), backend)
    return Completion(
        text=content,
        finish_reason=reason,  # type: ignore[arg-type]
        completion_tokens=completion_tokens,
        mean_logprob=mean_logprob,
        fields=fields,
    )


#: Reply-message fields carried verbatim on a `Completion` (what a client needs back).
_REPLY_FIELDS = ("tool_calls", "function_call", "refusal", "audio")


def _reply_fields(message: object) -> JsonFields:
    if not isinstance(message, dict) or len(message) <= 2:  # role and content only: the usual reply
        return ()
    return tuple((name, json.dumps(message[name])) for name in _REPLY_FIELDS if message.get(name) is not None)


def _mean_logprob(logprobs: Any, backend: str) -> float | None:
    """The mean of `logprobs.content[*].logprob` (OpenAI's shape), None when the reply has none."""
    if logprobs is None:
        return None
    tokens = logprobs.get("content") if isinstance(logprobs, dict) else None
    if tokens is None:
        return None
    try:
        values = [float(token["logprob"]) for token in tokens]
    except (TypeError, KeyError, ValueError) as exc:
        message = f"{backend}: malformed choice.logprobs: {logprobs!r:.200}"
        raise MalformedReply(message, backend=backend) from exc
    return sum(values) / len(values) if values else None


def _stream_delta(line: str, backend: str) -> str | None:
    """The text in one server-sent-events line: "" for lines without text, a `StreamTail` for the
    usage event, None at `[DONE]`."""
    if not line.startswith("data:"):
        return ""
    data = line.removeprefix("data:").strip()
    if data == "[DONE]":
        return None
    try:
        event = json.loads(data)
        choice = event["choices"][0] if event.get("choices") else {}
        content = (choice.get("delta") or {}).get("content")
        usage = event.get("usage")
        if isinstance(usage, dict):
            return StreamTail(Usage(int(usage["prompt_tokens"]), int(usage["completion_tokens"])))
    except (json.JSONDecodeError, AttributeError, KeyError, IndexError, TypeError, ValueError) as exc:
        raise MalformedReply(f"{backend}: malformed stream event {data[:200]!r}", backend=backend) from exc
    return content if isinstance(content, str) else ""
