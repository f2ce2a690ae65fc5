"""The run journal: every event of a run, appended to SQLite or PostgreSQL, and what a resume
needs back.

One file holds many runs. A *session* is one `budgetflow eval` invocation (its command line,
configuration hash and budgetflow version are recorded); each of its runs (a strategy, an
allocator at a budget) has a stable run id, `SESSION/NAME`, so a resumed session finds its runs
again. Records:

* `steps`: one row per unit step — what was asked (messages, sampling, seeds, prefill, a hash
  of the request) and, once it came back, what did (texts, finish reasons, usage, logprobs,
  scores). A completion is written and committed *inside* the emit of its `UnitCompleted`, so it
  is durable before the strategy acts on it, and its spend (the usage) is in the same row.
* `events`: every other event (ledger movements, decisions, retries, errors) as JSON, buffered
  and committed with the next completion, or when the journal is flushed or closed.
* `texts`: every message, prefill and completion text stored once, under its SHA-256, so the
  journal grows with the samples, not with how often a prompt is repeated.

Secrets never reach the file: the stored command line and configuration have API-key-shaped
values and `Authorization` headers replaced by `[redacted]`.

SQLite runs in WAL mode with a busy timeout; PostgreSQL (`postgresql://…`) for journals that
several machines share. One `Journal` is one writer (its subscriber is called on the event loop's
thread, in order); many writers may share one file or database.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from budgetflow.errors import ConfigError
from budgetflow.events import Event, EventStream, UnitCompleted, UnitRequested
from budgetflow.journal.database import Database, describe, open_database
from budgetflow.types import Completion, Message, Response, Usage

__all__ = ["Journal", "RecordedStep", "redact", "request_hash"]

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
        "sampling": dataclasses.asdict(sampling),
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
        for name, value in json.loads(json.dumps(dataclasses.asdict(sampling), default=str)).items():
            was = recorded_sampling.get(name)
            if was != value:
                found.append(f"sampling.{name}: {was!r} in the journal, {value!r} now")
        if _sha(prefill) != self.request.get("prefill"):
            found.append("prefill: another text")
        found += _message_differences(self.request.get("messages", []), messages)
        return found


class Journal:
    """Append a session's events to the journal at `target` (a SQLite file, or a PostgreSQL
    database given as a `postgresql://` URL); read back what a resume needs."""

    def __init__(self, target: Path | str) -> None:
        self.target = target
        #: Where the journal is, fit to print (a URL's password removed).
        self.location = describe(target)
        try:
            self._db: Database = open_database(target)
        except (sqlite3.Error, OSError) as error:
            raise ConfigError(f"cannot open the journal {self.location}: {error}") from error
        self._pending: list[tuple[str, str, str, float, str]] = []
        self._requests: dict[tuple[str, str, int], tuple[str, str, str]] = {}
        #: Completions committed by this writer (how much a Ctrl-C keeps).
        self.committed = 0

    def close(self) -> None:
        self.flush()
        self._db.close()

    # ---- sessions ------------------------------------------------------------------------------

    def start_session(self, session_id: str, *, command: Sequence[str], config: str, version: str) -> None:
        """Record a session (again, on resume: its first record is kept)."""
        clean = redact(config)
        self._db.execute(
            "INSERT INTO sessions VALUES (?, ?, ?, ?, ?, ?, NULL) ON CONFLICT DO NOTHING",
            (
                session_id,
                json.dumps([redact(part) for part in command]),
                clean,
                hashlib.sha256(clean.encode()).hexdigest(),
                version,
                time.time(),
            ),
        )

    def finish_session(self, session_id: str) -> None:
        self.flush()
        self._db.execute("UPDATE sessions SET finished = ? WHERE id = ?", (time.time(), session_id))

    def session(self, session_id: str) -> dict[str, Any] | None:
        row = self._db.execute(
            "SELECT command, config_hash, version, started, finished FROM sessions WHERE id = ?",
            (session_id,),
        ).fetchone()
        if row is None:
            return None
        return {
            "command": json.loads(row[0]),
            "config_hash": row[1],
            "version": row[2],
            "started": row[3],
            "finished": row[4],
        }

    # ---- writing -------------------------------------------------------------------------------

    def attach(self, events: EventStream) -> None:
        """Journal every event of `events` (a run's stream; its run id names the run)."""
        events.subscribe(self._on_event)

    def _on_event(self, event: Event) -> None:
        if isinstance(event, UnitRequested):
            self._requested(event)
        elif isinstance(event, UnitCompleted):
            self._completed(event)
        else:
            payload = json.dumps(_plain(event), default=str)
            self._pending.append((event.run_id, event.unit_id, type(event).__name__, event.at, payload))

    def _requested(self, event: UnitRequested) -> None:
        digest = request_hash(event.messages, event.sampling, event.n, event.prefill, event.kind)
        shape = {
            "messages": [[m.role, self._text(_flat(m))] for m in event.messages],
            "sampling": dataclasses.asdict(event.sampling),
            "n": event.n,
            "first_rollout": event.first_rollout,
            "seeds": list(event.seeds),
            "prefill": self._text(event.prefill),
            "keep_first": event.keep_first,
        }
        key = (event.run_id, event.unit_id, event.step)
        self._requests[key] = (event.kind, digest, json.dumps(shape))
        # committed at once: a step sent but never completed is what a resume calls "ambiguous"
        with self._transaction():
            self._write_step_request(key)

    def _completed(self, event: UnitCompleted) -> None:
        key = (event.run_id, event.unit_id, event.step)
        completion = {
            "texts": [self._text(text) for text in event.texts],
            "finish_reasons": list(event.finish_reasons),
            "logprobs": list(event.logprobs),
            "scores": list(event.scores),
            "refused": event.refused,
        }
        with self._transaction():
            self._write_step_request(key)
            self._db.execute(
                "UPDATE steps SET completion = ?, prompt_tokens = ?, completion_tokens = ?, "
                "unreported_prompt_tokens = ?, unreported_completion_tokens = ?, completed_at = ? "
                "WHERE run_id = ? AND unit_id = ? AND step = ? AND completion IS NULL",
                (
                    json.dumps(completion),
                    event.usage.prompt_tokens,
                    event.usage.completion_tokens,
                    event.unreported.prompt_tokens,
                    event.unreported.completion_tokens,
                    time.time(),
                    *key,
                ),
            )
            self._write_pending()
        self.committed += 1

    def _write_step_request(self, key: tuple[str, str, int]) -> None:
        request = self._requests.pop(key, None)
        if request is None:
            return
        kind, digest, shape = request
        self._db.execute(
            "INSERT INTO steps (run_id, unit_id, step, kind, request_hash, request, requested_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (run_id, unit_id, step) DO UPDATE SET "
            "attempts = steps.attempts + CASE WHEN steps.completion IS NULL THEN 1 ELSE 0 END",
            (*key, kind, digest, shape, time.time()),
        )

    def flush(self) -> None:
        """Commit the buffered events."""
        if self._pending:
            with self._transaction():
                self._write_pending()

    def _write_pending(self) -> None:
        if self._pending:
            self._db.executemany(
                "INSERT INTO events (run_id, unit_id, kind, at, payload) VALUES (?, ?, ?, ?, ?)",
                self._pending,
            )
            self._pending = []

    def _text(self, text: str) -> str:
        digest = _sha(text)
        self._db.execute("INSERT INTO texts VALUES (?, ?) ON CONFLICT DO NOTHING", (digest, text))
        return digest

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)

    # ---- reading -------------------------------------------------------------------------------

    def recorded(self, run_id: str) -> dict[tuple[str, int], RecordedStep]:
        """Every step of run `run_id` by (unit id, step): replies where they came back."""
        rows = self._db.execute(
            "SELECT unit_id, step, request_hash, completion, prompt_tokens, completion_tokens, "
            "unreported_prompt_tokens, unreported_completion_tokens, request, kind "
            "FROM steps WHERE run_id = ?",
            (run_id,),
        ).fetchall()
        return {(row[0], row[1]): self._recorded(row) for row in rows}

    def _recorded(self, row: tuple[Any, ...]) -> RecordedStep:
        _, _, digest, completion, prompt, generated, unreported_prompt, unreported_generated, *asked = row
        request, kind = json.loads(asked[0]), asked[1]
        if completion is None:
            return RecordedStep(digest, None, request=request, kind=kind)
        body = json.loads(completion)
        texts = [self._read_text(sha) for sha in body["texts"]]
        completions = tuple(
            Completion(text=text, finish_reason=reason, mean_logprob=logprob)
            for text, reason, logprob in zip(
                texts, body["finish_reasons"], body["logprobs"] or [None] * len(texts), strict=True
            )
        )
        response = Response(
            completions=completions,
            usage=Usage(prompt, generated),
            unreported=Usage(unreported_prompt or 0, unreported_generated or 0),
        )
        return RecordedStep(
            digest, response, tuple(body["scores"]), bool(body["refused"]), request=request, kind=kind
        )

    def _read_text(self, sha: str) -> str:
        row = self._db.execute("SELECT text FROM texts WHERE sha256 = ?", (sha,)).fetchone()
        if row is None:
            raise ConfigError(f"the journal {self.location} is missing text {sha[:12]}")
        return str(row[0])

    def units(self, session_id: str) -> dict[str, dict[str, dict[str, Any]]]:
        """Every unit of every run of a session: its steps, the tokens they spent, and (once it
        finished) its answer, why it stopped and its score — what `budgetflow trace` shows."""
        prefix = f"{session_id}/%"
        runs: dict[str, dict[str, dict[str, Any]]] = {}
        for run_id, unit_id, steps, prompt, generated, open_steps in self._db.execute(
            "SELECT run_id, unit_id, COUNT(*), SUM(prompt_tokens), SUM(completion_tokens), "
            "SUM(CASE WHEN completion IS NULL THEN 1 ELSE 0 END) FROM steps WHERE run_id LIKE ? "
            "GROUP BY run_id, unit_id",
            (prefix,),
        ):
            runs.setdefault(run_id, {})[unit_id] = {
                "steps": steps,
                "tokens": (prompt or 0) + (generated or 0),
                "unfinished_steps": open_steps,
            }
        for run_id, kind, payload in self._db.execute(
            "SELECT run_id, kind, payload FROM events WHERE run_id LIKE ? AND kind IN "
            "('UnitFinished', 'QuestionFinished') ORDER BY seq",
            (prefix,),
        ):
            event = json.loads(payload)
            unit = runs.setdefault(run_id, {}).setdefault(event["unit_id"], {"steps": 0, "tokens": 0})
            if kind == "UnitFinished":
                unit.update(answer=event["answer"], reason=event["reason"], starved=event["starved"])
            else:
                unit["score"] = event["score"]
        return runs

    def steps_of(self, session_id: str) -> list[dict[str, Any]]:
        """Every step of a session's runs, in the order they were sent: its request and (once it
        came back) completion as stored (texts as SHA-256 keys: `text` reads one), its tokens and
        the wall-clock times it was sent and came back."""
        columns = (
            "run_id",
            "unit_id",
            "step",
            "kind",
            "request",
            "completion",
            "prompt_tokens",
            "completion_tokens",
            "attempts",
            "requested_at",
            "completed_at",
        )
        rows = self._db.execute(
            f"SELECT {', '.join(columns)} FROM steps WHERE run_id LIKE ? ORDER BY requested_at",
            (f"{session_id}/%",),
        ).fetchall()
        found = [dict(zip(columns, row, strict=True)) for row in rows]
        for step in found:
            step["request"] = json.loads(step["request"])
            step["completion"] = json.loads(step["completion"]) if step["completion"] else None
        return found

    def events_of(self, session_id: str, kinds: Sequence[str]) -> list[dict[str, Any]]:
        """A session's events of the given kinds (`RunStarted`, `UnitFinished`, …), in order,
        each as its fields plus `kind`."""
        marks = ", ".join("?" for _ in kinds)
        rows = self._db.execute(
            f"SELECT kind, payload FROM events WHERE run_id LIKE ? AND kind IN ({marks}) ORDER BY seq",
            (f"{session_id}/%", *kinds),
        ).fetchall()
        return [{**json.loads(payload), "kind": kind} for kind, payload in rows]

    def text(self, sha: str) -> str:
        """A stored text by its SHA-256 key."""
        return self._read_text(sha)

    def counts(self) -> dict[str, int]:
        return {
            table: int(self._db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
            for table in ("sessions", "steps", "events", "texts")
        }


class _Transaction:
    def __init__(self, db: Database) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.begin()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if exc is None:
            self._db.commit()
        else:
            self._db.rollback()


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _message_differences(recorded: list[list[str]], messages: Sequence[Message]) -> list[str]:
    if len(recorded) != len(messages):
        return [f"messages: {len(recorded)} in the journal, {len(messages)} now"]
    return [
        f"messages[{index}] ({message.role}): another text"
        if role == message.role
        else f"messages[{index}]: role {role!r} in the journal, {message.role!r} now"
        for index, ((role, sha), message) in enumerate(zip(recorded, messages, strict=True))
        if role != message.role or sha != _sha(_flat(message))
    ]


def _flat(message: Message) -> str:
    return json.dumps(_content(message)) if not isinstance(message.content, str) else message.content


def _plain(event: Event) -> dict[str, Any]:
    """An event's fields as JSON-ready values (dataclasses as dicts, tuples as lists)."""
    return {field.name: _value(getattr(event, field.name)) for field in dataclasses.fields(event)}


def _value(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: _value(getattr(value, field.name)) for field in dataclasses.fields(value)}
    if isinstance(value, tuple | list):
        return [_value(item) for item in value]
    return value
