"""The journal's one writer: a thread that turns a run's events into rows, many per transaction.

The event loop only queues events (`enqueue`: no I/O, no serialisation). The writer thread takes
whatever has queued up, writes it in one transaction and commits (group commit: under load one
commit covers many completions), then wakes the tasks waiting in `durable()`. The execution core
awaits `durable()` after journaling a step's request (before sending it) and after its completion
(before the strategy sees it), so a crash finds every sent request and every completion anything
acted on in the journal, and the loop never blocks on the disk or the database.

A write that fails (disk full, database gone) is kept and raised, as `ConfigError`, to every
waiter and every later `durable()`/`flush()`: a run stops instead of going on unjournaled.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import json
import queue
import threading
import time
from collections.abc import Sequence
from typing import Any, Final

from budgetflow.errors import ConfigError
from budgetflow.events import Event, UnitCompleted, UnitRequested
from budgetflow.journal.database import Database
from budgetflow.journal.records import flat_text, plain, request_hash, sha256_text

__all__ = ["JournalWriter"]

#: Most queued items written in one transaction.
BATCH: Final = 2000
#: Texts remembered as stored (by content), so a prompt asked again is not inserted again.
KNOWN_TEXTS: Final = 4096


@dataclasses.dataclass(frozen=True, slots=True)
class _Statement:
    sql: str
    parameters: Sequence[Any]


class _Stop:
    pass


_Item = Event | _Statement | _Stop


class JournalWriter:
    """The thread that writes to `db` (used by no other thread once handed over)."""

    def __init__(self, db: Database, location: str) -> None:
        self._db = db
        self._location = location
        self._queue: queue.SimpleQueue[tuple[int, _Item]] = queue.SimpleQueue()
        self._enqueued = 0  # items queued (on the caller's thread)
        self._written = 0  # items committed (set by the writer thread)
        self._lock = threading.Lock()
        self._waiters: list[tuple[int, asyncio.Future[None], asyncio.AbstractEventLoop]] = []
        self._flushed = threading.Condition(self._lock)
        self._error: BaseException | None = None
        self._wall = time.time() - time.monotonic()  # events carry monotonic times
        self._events: list[tuple[str, str, str, float, str]] = []  # the batch's other events
        self._known: collections.OrderedDict[str, str] = collections.OrderedDict()
        self._pending_texts: dict[str, str] = {}
        #: Completions committed (how much a Ctrl-C keeps).
        self.committed = 0
        self._thread = threading.Thread(target=self._run, name="budgetflow-journal", daemon=True)
        self._thread.start()

    # ---- the caller's side --------------------------------------------------------------------

    def enqueue(self, item: _Item) -> None:
        self._enqueued += 1
        self._queue.put((self._enqueued, item))

    def execute(self, sql: str, parameters: Sequence[Any]) -> None:
        """Run one statement in order with the events (then `flush()` to wait for it)."""
        self.enqueue(_Statement(sql, parameters))

    async def durable(self) -> None:
        """Return once everything queued so far is committed."""
        wanted = self._enqueued
        if self._written >= wanted:
            self._raise_failure()
            return
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        with self._lock:
            if self._written >= wanted or self._error is not None:
                waiter.set_result(None)
            else:
                self._waiters.append((wanted, waiter, loop))
        await waiter
        self._raise_failure()

    def flush(self) -> None:
        """Block until everything queued so far is committed."""
        wanted = self._enqueued
        with self._flushed:
            self._flushed.wait_for(lambda: self._written >= wanted or self._error is not None)
        self._raise_failure()

    def close(self) -> None:
        self.enqueue(_Stop())
        self._thread.join()
        self._raise_failure()

    def _raise_failure(self) -> None:
        if self._error is not None:
            raise ConfigError(f"writing the journal {self._location} failed: {self._error}") from self._error

    # ---- the writer thread --------------------------------------------------------------------

    def _run(self) -> None:
        stopping = False
        while not stopping:
            batch = [self._queue.get()]
            while len(batch) < BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stopping = any(isinstance(item, _Stop) for _, item in batch)
            if self._error is None:
                self._write(batch)
            self._published(batch[-1][0])
        with contextlib.suppress(Exception):  # closing what failed may fail again
            self._db.close()

    def _write(self, batch: list[tuple[int, _Item]]) -> None:
        completions = 0
        try:
            self._db.begin()
            try:
                for _, item in batch:
                    completions += self._write_one(item)
                if self._events:
                    self._db.executemany(
                        "INSERT INTO events (run_id, unit_id, kind, at, payload) VALUES (?, ?, ?, ?, ?)",
                        self._events,
                    )
                    self._events = []
                self._db.commit()
            except BaseException:
                self._db.rollback()
                raise
            finally:
                self._events = []
            self._remember(self._pending_texts)
        except Exception as error:  # kept, and raised on the caller's side
            self._pending_texts = {}
            self._error = error
            return
        self._pending_texts = {}
        self.committed += completions

    def _remember(self, texts: dict[str, str]) -> None:
        self._known.update(texts)
        while len(self._known) > KNOWN_TEXTS:
            self._known.popitem(last=False)

    def _published(self, sequence: int) -> None:
        """Wake the waiters for everything up to `sequence`."""
        with self._lock:
            self._written = sequence
            ready = [w for w in self._waiters if w[0] <= sequence or self._error is not None]
            self._waiters = [w for w in self._waiters if w[0] > sequence and self._error is None]
            self._flushed.notify_all()
        for _, waiter, loop in ready:
            with contextlib.suppress(RuntimeError):  # its loop has closed: nobody waits any more
                loop.call_soon_threadsafe(_wake, waiter)

    def _write_one(self, item: _Item) -> int:
        if isinstance(item, UnitRequested):
            self._requested(item)
        elif isinstance(item, UnitCompleted):
            self._completed(item)
            return 1
        elif isinstance(item, _Statement):
            self._db.execute(item.sql, item.parameters)
        elif isinstance(item, Event):  # written with the batch, in order, by one executemany
            payload = json.dumps(plain(item), default=str)
            self._events.append((item.run_id, item.unit_id, type(item).__name__, item.at, payload))
        return 0

    def _requested(self, event: UnitRequested) -> None:
        digest = request_hash(event.messages, event.sampling, event.n, event.prefill, event.kind)
        shape = {
            "messages": [[m.role, self._text(flat_text(m))] for m in event.messages],
            "sampling": plain(event.sampling),
            "n": event.n,
            "first_rollout": event.first_rollout,
            "seeds": list(event.seeds),
            "prefill": self._text(event.prefill),
            "keep_first": event.keep_first,
        }
        # a step asked again (a resumed run re-sending what was in flight) counts another attempt
        self._db.execute(
            "INSERT INTO steps (run_id, unit_id, step, kind, request_hash, request, requested_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (run_id, unit_id, step) DO UPDATE SET "
            "attempts = steps.attempts + CASE WHEN steps.completion IS NULL THEN 1 ELSE 0 END",
            (
                event.run_id,
                event.unit_id,
                event.step,
                event.kind,
                digest,
                json.dumps(shape),
                event.at + self._wall,
            ),
        )

    def _completed(self, event: UnitCompleted) -> None:
        completion = {
            "texts": [self._text(text) for text in event.texts],
            "finish_reasons": list(event.finish_reasons),
            "logprobs": list(event.logprobs),
            "scores": list(event.scores),
            "refused": event.refused,
            "tokens": list(event.tokens),
            "fields": [[list(pair) for pair in fields] for fields in event.fields],
        }
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
                event.at + self._wall,
                event.run_id,
                event.unit_id,
                event.step,
            ),
        )

    def _text(self, text: str) -> str:
        """`text` stored once; its key. Texts this writer stored lately (a run's prompts, asked
        again and again) are not sent to the database again."""
        digest = self._known.get(text)
        if digest is not None:
            self._known.move_to_end(text)
            return digest
        digest = self._pending_texts.get(text)
        if digest is not None:
            return digest
        digest = sha256_text(text)
        self._db.execute("INSERT INTO texts VALUES (?, ?) ON CONFLICT DO NOTHING", (digest, text))
        self._pending_texts[text] = digest
        return digest


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
