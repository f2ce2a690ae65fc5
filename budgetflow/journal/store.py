"""The run journal: every event of a run, appended to SQLite or PostgreSQL, and what a resume
needs back.

One file holds many runs. A *session* is one `budgetflow eval` invocation (its command line,
configuration hash and budgetflow version are recorded); each of its runs (a strategy, an
allocator at a budget) has a stable run id, `SESSION/NAME`, so a resumed session finds its runs
again. Records:

* `steps`: one row per unit step — what was asked (messages, sampling, seeds, prefill, a hash
  of the request) and, once it came back, what did (texts, finish reasons, usage, logprobs,
  scores), with its spend (the usage) in the same row. The execution core waits until a step's
  request is committed before sending it, and until its completion is before the strategy sees
  it (`EventStream.durable`).
* `events`: every other event (ledger movements, decisions, retries, errors) as JSON, in order.
* `texts`: every message, prefill and completion text stored once, under its SHA-256, so the
  journal grows with the samples, not with how often a prompt is repeated.

Secrets never reach the file: the stored command line and configuration have API-key-shaped
values and `Authorization` headers replaced by `[redacted]`.

SQLite runs in WAL mode with a busy timeout; PostgreSQL (`postgresql://…`) for journals that
several machines share. One `Journal` is one writer: its subscriber only queues each event, and
a writer thread (`writer.JournalWriter`) commits them in order, many per transaction, so the
event loop never waits on the disk. Many journals may share one file or database.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from budgetflow.errors import ConfigError
from budgetflow.events import Event, EventStream
from budgetflow.journal.database import Database, describe, open_database
from budgetflow.journal.records import RecordedStep, redact
from budgetflow.journal.writer import JournalWriter
from budgetflow.types import Completion, Response, Usage

__all__ = ["Journal"]


class Journal:
    """Append a session's events to the journal at `target` (a SQLite file, or a PostgreSQL
    database given as a `postgresql://` URL); read back what a resume needs."""

    def __init__(self, target: Path | str) -> None:
        self.target = target
        #: Where the journal is, fit to print (a URL's password removed).
        self.location = describe(target)
        try:
            self._db: Database = open_database(target)  # for reading, on the caller's thread
            self._writer = JournalWriter(open_database(target), self.location)
        except (sqlite3.Error, OSError) as error:
            raise ConfigError(f"cannot open the journal {self.location}: {error}") from error

    @property
    def committed(self) -> int:
        """Completions committed by this journal's writer (how much a Ctrl-C keeps)."""
        return self._writer.committed

    def close(self) -> None:
        try:
            self._writer.close()
        finally:
            self._db.close()

    # ---- sessions ------------------------------------------------------------------------------

    def start_session(self, session_id: str, *, command: Sequence[str], config: str, version: str) -> None:
        """Record a session (again, on resume: its first record is kept)."""
        clean = redact(config)
        self._writer.execute(
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
        self._writer.flush()

    def finish_session(self, session_id: str) -> None:
        self._writer.execute("UPDATE sessions SET finished = ? WHERE id = ?", (time.time(), session_id))
        self._writer.flush()

    def session(self, session_id: str) -> dict[str, Any] | None:
        self.flush()
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
        """Journal every event of `events` (a run's stream; its run id names the run); the run's
        units wait for their steps to be durable (`EventStream.durable`)."""
        events.subscribe(self._on_event)
        events.add_barrier(self._writer.durable)

    def _on_event(self, event: Event) -> None:
        self._writer.enqueue(event)

    def flush(self) -> None:
        """Wait until every event queued so far is committed."""
        self._writer.flush()

    # ---- reading -------------------------------------------------------------------------------

    def recorded(self, run_id: str) -> dict[tuple[str, int], RecordedStep]:
        """Every step of run `run_id` by (unit id, step): replies where they came back."""
        self.flush()
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
        count = len(texts)
        tokens = body.get("tokens") or [0] * count  # journals before 2026-12-04 kept no counts
        fields = body.get("fields") or [[]] * count
        completions = tuple(
            Completion(
                text=text,
                finish_reason=reason,
                mean_logprob=logprob,
                completion_tokens=generated_tokens,
                fields=tuple((name, value) for name, value in reply_fields),
            )
            for text, reason, logprob, generated_tokens, reply_fields in zip(
                texts,
                body["finish_reasons"],
                body["logprobs"] or [None] * count,
                tokens,
                fields,
                strict=True,
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
        self.flush()
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
        self.flush()
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
        self.flush()
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
        self.flush()
        return {
            table: int(self._db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
            for table in ("sessions", "steps", "events", "texts")
        }
