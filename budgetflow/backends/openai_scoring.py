"""Scoring text over HTTP: each continuation's log-probability from `/v1/completions` with `echo`.

A likelihood verifier needs the model's log-probability of a candidate reply after the question.
OpenAI-compatible servers that can return prompt log-probabilities (vLLM; llama-cpp-python's
server started with `--logits_all True`; OpenAI's legacy completions) answer a completions
request with `echo: true, logprobs: 1`: the prompt's tokens come back with their log-probabilities.
The prompt is the chat rendered as text by `render_chat` (ChatML, the template of SmolLM2, Qwen and
most open instruct models, or `plain` for base models), the question's reply opening and then the
candidate; the score is the sum over the tokens that carry the candidate's text. One request per
candidate, one token generated each (`max_tokens: 0` means "until the context ends" on some
servers): what the server bills is what the ledger settles (`ScoredContinuations.usage`).

A token that straddles the reply's start (`"\\n "` when the candidate begins with a space) counts
with the candidate: the embedded model tokenizes the candidate on its own, so the two agree to
within that token (see `docs/allocation.md`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Literal

from budgetflow.errors import ConfigError, MalformedReply
from budgetflow.types import Message, TextPart, Usage

__all__ = ["ChatRendering", "cannot_score", "continuation_score", "render_chat", "scoring_payload"]

ChatRendering = Literal["chatml", "plain"]


def render_chat(messages: Sequence[Message], prefill: str, rendering: ChatRendering) -> str:
    """The chat as one prompt text, ending where the assistant's reply (after `prefill`) begins."""
    if rendering == "plain":
        return "\n\n".join(_text_of(m) for m in messages) + "\n\n" + prefill
    turns = "".join(f"<|im_start|>{m.role}\n{_text_of(m)}<|im_end|>\n" for m in messages)
    return f"{turns}<|im_start|>assistant\n{prefill}"


def _text_of(message: Message) -> str:
    if isinstance(message.content, str):
        return message.content
    if all(isinstance(part, TextPart) for part in message.content):
        return "".join(part.text for part in message.content if isinstance(part, TextPart))
    raise ConfigError("scoring text over HTTP takes text messages only (this one has media parts)")


def scoring_payload(model: str, prompt: str, continuation: str) -> dict[str, Any]:
    return {
        "model": model,
        "prompt": prompt + continuation,
        "max_tokens": 1,
        "temperature": 0.0,
        "echo": True,
        "logprobs": 1,
    }


def continuation_score(body: bytes, continuation: str, *, backend: str, url: str) -> tuple[float, Usage]:
    """The summed log-probability of the tokens carrying `continuation` at the end of the echoed
    prompt, and the reply's usage; a reply without prompt log-probabilities is a `ConfigError`
    (the endpoint cannot score text), one of the wrong shape a `MalformedReply`."""
    try:
        data = json.loads(body)
        choice = data["choices"][0]
        raw_usage = data.get("usage") or {}
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, IndexError, TypeError) as exc:
        raise MalformedReply(f"{backend}: {url} replied {body[:200]!r}", backend=backend) from exc
    logprobs = choice.get("logprobs") if isinstance(choice, dict) else None
    if not isinstance(logprobs, dict) or not logprobs.get("token_logprobs"):
        raise cannot_score(backend, url, "the reply carries no prompt log-probabilities")
    usage = Usage(int(raw_usage.get("prompt_tokens", 0)), int(raw_usage.get("completion_tokens", 0)))
    try:
        tokens = [str(t) for t in logprobs["tokens"]]
        values = [None if v is None else float(v) for v in logprobs["token_logprobs"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise MalformedReply(
            f"{backend}: malformed logprobs from {url}: {logprobs!r:.200}", backend=backend
        ) from exc
    generated = usage.completion_tokens if raw_usage else 1
    if len(tokens) <= generated:
        raise cannot_score(backend, url, "the reply does not echo the prompt's tokens")
    return _tail_sum(tokens[: len(tokens) - generated], values, len(continuation)), usage


def _tail_sum(tokens: list[str], values: list[float | None], characters: int) -> float:
    """Sum of the log-probabilities of the last tokens whose text covers `characters` characters."""
    total, covered, index = 0.0, 0, len(tokens)
    while covered < characters and index > 0:
        index -= 1
        covered += len(tokens[index])
        total += values[index] or 0.0
    return total


def cannot_score(backend: str, url: str, why: str) -> ConfigError:
    return ConfigError(
        f"{backend} cannot score text: POST {url} with echo and logprobs failed ({why}). A likelihood "
        "verifier needs prompt log-probabilities: vLLM, or llama-cpp-python's server started with "
        "--logits_all True; otherwise run without a verifier"
    )
