"""Core value types: messages with content parts, requests, completions and usage."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from budgetflow.errors import ConfigError
from budgetflow.usage import NO_USAGE, Usage

__all__ = [
    "AudioPart",
    "Completion",
    "ContentPart",
    "FinishReason",
    "ImagePart",
    "JsonFields",
    "Message",
    "Question",
    "Request",
    "Response",
    "Role",
    "SamplingParams",
    "Spend",
    "TextPart",
    "Usage",
    "VideoPart",
]

Role = Literal["system", "user", "assistant", "tool"]
FinishReason = Literal["stop", "length", "cancelled", "tool_calls"]


@dataclass(frozen=True, slots=True, kw_only=True)
class TextPart:
    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ImagePart:
    """An image by URL (`https://…` or a `data:` URL)."""

    url: str
    detail: Literal["auto", "low", "high"] = "auto"


@dataclass(frozen=True, slots=True, kw_only=True)
class AudioPart:
    """Base64-encoded audio in a named format (`wav`, `mp3`)."""

    data: str
    format: str


@dataclass(frozen=True, slots=True, kw_only=True)
class VideoPart:
    """A video by URL (`https://…` or a `data:` URL)."""

    url: str


ContentPart = TextPart | ImagePart | AudioPart | VideoPart


#: OpenAI fields budgetflow does not model, carried verbatim: (name, JSON text) pairs.
JsonFields = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Message:
    """One chat message. `content` is plain text or a sequence of content parts. `fields` are
    the message's other OpenAI fields (`tool_calls`, `tool_call_id`, `name`), carried verbatim to
    endpoints that take them as (name, JSON text) pairs."""

    role: Role
    content: str | tuple[ContentPart, ...]
    fields: JsonFields = ()

    def __post_init__(self) -> None:
        if self.role not in ("system", "user", "assistant", "tool"):
            raise ConfigError(f"Message.role must be system, user, assistant or tool, not {self.role!r}")
        if not isinstance(self.content, str):
            object.__setattr__(self, "content", tuple(self.content))

    @property
    def text(self) -> str:
        """The concatenated text parts (media parts are skipped)."""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content if isinstance(part, TextPart))

    @property
    def has_media(self) -> bool:
        return not isinstance(self.content, str) and any(
            not isinstance(part, TextPart) for part in self.content
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class SamplingParams:
    """The one sampling-parameter type; each backend maps it to its own options.

    `temperature=0` means greedy decoding. `seed=None` means unseeded (not reproducible).
    `logprobs=True` asks for each completion's mean token log-probability
    (`Completion.mean_logprob`), a confidence signal for weighted voting; backends that cannot
    report it leave it None.
    """

    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    seed: int | None = None
    logprobs: bool = False

    def __post_init__(self) -> None:
        if not self.temperature >= 0:
            raise ConfigError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_tokens < 1:
            raise ConfigError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if type(self.stop) is not tuple:
            object.__setattr__(self, "stop", tuple(self.stop))
        if "" in self.stop:
            raise ConfigError("stop strings must not be empty")

    def for_draw(self, *, temperature: float, max_tokens: int, stop: tuple[str, ...]) -> SamplingParams:
        """These parameters as one draw of a strategy sets them (cheaper than `replace`; a new
        field must be carried here and in `with_seed`)."""
        return SamplingParams(
            temperature=temperature,
            top_p=self.top_p,
            max_tokens=max_tokens,
            stop=stop,
            seed=self.seed,
            logprobs=self.logprobs,
        )

    def with_seed(self, seed: int | None) -> SamplingParams:
        """The same parameters with another seed (what every draw does: cheaper than `replace`)."""
        return SamplingParams(
            temperature=self.temperature,
            top_p=self.top_p,
            max_tokens=self.max_tokens,
            stop=self.stop,
            seed=seed,
            logprobs=self.logprobs,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Request:
    """Ask a backend for `n` completions of one conversation.

    With `keep_first=k`, the backend starts `n` samples but returns only the first `k` to finish
    and stops the others mid-generation (First Finish Search); usage still counts every token
    the stopped samples generated. `prefill` is the start of the assistant's reply, which the
    samples continue (completions hold only the continuation). `thinking` switches a reasoning
    model's thinking on or off where the backend supports it (None: the backend's default).
    `passthrough` holds request fields an OpenAI-compatible endpoint takes verbatim (`tools`,
    `tool_choice`, `response_format`) as (name, JSON text) pairs; backends that cannot honour
    them refuse the request. `unit_id` names the unit of work that sent it (for events and
    journals; backends ignore it, and it is not part of what a cache matches).
    """

    messages: tuple[Message, ...]
    sampling: SamplingParams = field(default_factory=SamplingParams)
    n: int = 1
    model: str | None = None
    keep_first: int | None = None
    prefill: str = ""
    thinking: bool | None = None
    passthrough: JsonFields = ()
    unit_id: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if type(self.messages) is not tuple:
            object.__setattr__(self, "messages", tuple(self.messages))
        if not self.messages:
            raise ConfigError("a Request needs at least one message")
        if self.n < 1:
            raise ConfigError(f"n must be >= 1, got {self.n}")
        if self.keep_first is not None and not 1 <= self.keep_first <= self.n:
            raise ConfigError(f"keep_first must be between 1 and n={self.n}, got {self.keep_first}")

    def sent_as(self, sampling: SamplingParams, *, unit_id: str) -> Request:
        """This request with `sampling` (a seeded copy, say), sent by unit `unit_id`."""
        return Request(
            messages=self.messages,
            sampling=sampling,
            n=self.n,
            model=self.model,
            keep_first=self.keep_first,
            prefill=self.prefill,
            thinking=self.thinking,
            passthrough=self.passthrough,
            unit_id=unit_id,
        )

    @property
    def returned(self) -> int:
        """How many completions the reply carries: `keep_first` when set, else `n`."""
        return self.keep_first if self.keep_first is not None else self.n

    @classmethod
    def from_prompt(
        cls,
        prompt: str,
        *,
        system: str | None = None,
        sampling: SamplingParams | None = None,
        n: int = 1,
        keep_first: int | None = None,
    ) -> Request:
        """A request with one user message (and an optional system message)."""
        messages: list[Message] = [Message("system", system)] if system else []
        messages.append(Message("user", prompt))
        return cls(
            messages=tuple(messages), sampling=sampling or SamplingParams(), n=n, keep_first=keep_first
        )


PICODOLLARS_PER_DOLLAR = 10**12


@dataclass(frozen=True, slots=True)
class Spend:
    """What a budget counts: tokens, money and calls. Used for limits, reservations and spend.

    Money is kept as whole picodollars (`cost_pico`) so that sums are exact and a checked limit
    holds to the last unit; `cost` gives dollars for display.
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_pico: int = 0
    calls: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def cost(self) -> float:
        return self.cost_pico / PICODOLLARS_PER_DOLLAR

    def __add__(self, other: Spend) -> Spend:
        return Spend(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.cost_pico + other.cost_pico,
            self.calls + other.calls,
        )

    def __sub__(self, other: Spend) -> Spend:
        return Spend(
            self.prompt_tokens - other.prompt_tokens,
            self.completion_tokens - other.completion_tokens,
            self.cost_pico - other.cost_pico,
            self.calls - other.calls,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Completion:
    """One sampled continuation; `mean_logprob` is the mean log-probability of its tokens under
    the model's own distribution (before temperature), when the request asked for logprobs.
    `fields` are the reply message's other fields (`tool_calls`) as (name, JSON text) pairs."""

    text: str
    finish_reason: FinishReason = "stop"
    completion_tokens: int = 0
    mean_logprob: float | None = None
    fields: JsonFields = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Response:
    """The `n` completions a backend returned for one request, and what they cost.

    `usage` is what the backend reported. `unreported` is work it did but could not report —
    first-finish racers cancelled mid-generation over HTTP, which servers bill — charged
    conservatively (their prompt and their whole `max_tokens`); the ledger settles both."""

    completions: tuple[Completion, ...]
    usage: Usage
    model: str = ""
    unreported: Usage = NO_USAGE

    def __post_init__(self) -> None:
        if type(self.completions) is not tuple:
            object.__setattr__(self, "completions", tuple(self.completions))

    @property
    def texts(self) -> list[str]:
        return [c.text for c in self.completions]


@dataclass(frozen=True, slots=True, kw_only=True)
class Question:
    """One evaluation item: the question text, the prompt that asks it, and the gold answer.

    `entry` keeps the source record for graders that need more than the gold string
    (reasoning-gym's own scorers, for example). `alternates` are other prompts that ask the same
    question (other few-shot examples, say): ensemble sampling spreads samples over `prompts`, so
    that errors a prompt's wording causes do not all vote together.
    """

    id: str
    text: str
    gold: str
    messages: tuple[Message, ...]
    entry: dict[str, object] = field(default_factory=dict, compare=False, hash=False)
    alternates: tuple[tuple[Message, ...], ...] = ()

    @property
    def prompts(self) -> tuple[tuple[Message, ...], ...]:
        """The question's own prompt first, then its alternates."""
        return (self.messages, *self.alternates)

    def prompt_shares(self, n: int, first: int = 0) -> list[tuple[tuple[Message, ...], int]]:
        """`n` samples spread round-robin over `prompts`, starting at prompt `first` (mod their
        number): (prompt, samples) pairs, prompts with no share left out."""
        prompts = self.prompts
        counts = [0] * len(prompts)
        for offset in range(n):
            counts[(first + offset) % len(prompts)] += 1
        return [(prompts[i], c) for i, c in enumerate(counts) if c]
