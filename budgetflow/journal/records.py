"""What the journal stores and compares, without any I/O: request hashes, redaction of secrets,
events as JSON-ready values, and a journaled step as a resumed run sees it."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Sequence
from typing import Any, Final

from budgetflow.types import Message, Response

__all__ = ["RecordedStep", "flat_text", "plain", "redact", "request_hash", "sha256_text"]

_SECRET: Final = re.compile(
    r"(?i)(bearer\s+)\S+|\b(sk|bf|pk|rk)-[A-Za-z0-9_\-]{8,}|(://[^:/@\s]+:)[^@\s]+(?=@)"
)


def redact(text: str) -> str:
    """`text` with API-key-shaped values (`sk-…`, `bf-…`), bearer tokens and the passwords of
    URLs (`postgresql://user:PASSWORD@host`) replaced."""
    return _SECRET.sub(lambda m: (m.group(1) or m.group(3) or "") + "[redacted]", text)


def request_hash(messages: Sequence[Message], sampling: Any, n: int, prefill: str, kind: str) -> str:
    """What a step asked for, hashed: a resumed run's step must ask the same to reuse its reply."""
    shape = {
        "messages": [[m.role, _content(m), m.fields] for m in messages],
        "sampling": plain(sampling),
        "n": n,
        "prefill": prefill,
        "kind": kind,
    }
    return hashlib.sha256(json.dumps(shape, sort_keys=True, default=str).encode()).hexdigest()


def _content(message: Message) -> Any:
    if isinstance(message.content, str):
        return message.content
    return [dataclasses.asdict(part) for part in message.content]


@dataclasses.dataclass(frozen=True, slots=True)
class RecordedStep:
    """A step of a journaled run: its request hash and, when it had come back, its reply."""

    request_hash: str
    response: Response | None
    scores: tuple[float, ...] = ()
    refused: bool = False
    #: What the step asked, as journaled (texts by SHA-256), and its kind: what a mismatch names.
    request: dict[str, Any] = dataclasses.field(default_factory=dict)
    kind: str = "complete"

    @property
    def finished(self) -> bool:
        return self.response is not None

    def differences(
        self, messages: Sequence[Message], sampling: Any, n: int, prefill: str, kind: str
    ) -> list[str]:
        """How a step asking this differs from what the journal recorded, field by field."""
        if not self.request:
            return []
        found: list[str] = []
        if kind != self.kind:
            found.append(f"kind: {self.kind!r} in the journal, {kind!r} now")
        if n != self.request.get("n"):
            found.append(f"n: {self.request.get('n')} in the journal, {n} now")
        recorded_sampling = self.request.get("sampling", {})
        for name, value in json.loads(json.dumps(plain(sampling), default=str)).items():
            was = recorded_sampling.get(name)
            if was != value:
                found.append(f"sampling.{name}: {was!r} in the journal, {value!r} now")
        if sha256_text(prefill) != self.request.get("prefill"):
            found.append("prefill: another text")
        found += _message_differences(self.request.get("messages", []), messages)
        return found


def sha256_text(text: str) -> str:
    """The SHA-256 key a text is stored under."""
    return hashlib.sha256(text.encode()).hexdigest()


def _message_differences(recorded: list[list[str]], messages: Sequence[Message]) -> list[str]:
    if len(recorded) != len(messages):
        return [f"messages: {len(recorded)} in the journal, {len(messages)} now"]
    return [
        f"messages[{index}] ({message.role}): another text"
        if role == message.role
        else f"messages[{index}]: role {role!r} in the journal, {message.role!r} now"
        for index, ((role, sha), message) in enumerate(zip(recorded, messages, strict=True))
        if role != message.role or sha != sha256_text(flat_text(message))
    ]


def flat_text(message: Message) -> str:
    """A message's content as one text (content parts as JSON)."""
    return json.dumps(_content(message)) if not isinstance(message.content, str) else message.content


def plain(record: Any) -> dict[str, Any]:
    """A dataclass's fields (an event, sampling parameters) as JSON-ready values: dataclasses as
    dicts, tuples as lists — what `dataclasses.asdict` gives, without its deep copies (the
    journal's writer does this for every event)."""
    return {name: _value(getattr(record, name)) for name in _field_names(type(record))}


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}
_ATOMS: Final = (str, int, float, bool, type(None))


def _field_names(kind: type) -> tuple[str, ...]:
    names = _FIELD_NAMES.get(kind)
    if names is None:
        names = _FIELD_NAMES[kind] = tuple(field.name for field in dataclasses.fields(kind))
    return names


def _value(value: Any) -> Any:
    if isinstance(value, _ATOMS):
        return value
    if isinstance(value, tuple | list):
        return [_value(item) for item in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return plain(value)
    return value
