"""Where a journal lives: a SQLite file (the default) or a PostgreSQL database (`postgresql://…`,
through psycopg, for journals shared by several machines).

Both speak the same SQL through one small interface: `?` placeholders (rewritten to `%s` for
psycopg), `INSERT … ON CONFLICT`, `CASE` instead of boolean arithmetic, explicit transactions
(`BEGIN IMMEDIATE` on SQLite, so a writer waits for the lock up front instead of failing half-way).
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Final, Protocol

from budgetflow.errors import ConfigError

__all__ = ["Database", "describe", "is_postgres", "open_database"]

_TABLES: Final = """
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    command TEXT NOT NULL,
    config TEXT NOT NULL,
    config_hash TEXT NOT NULL,
    version TEXT NOT NULL,
    started DOUBLE PRECISION NOT NULL,
    finished DOUBLE PRECISION
);
CREATE TABLE IF NOT EXISTS texts (sha256 TEXT PRIMARY KEY, text TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS steps (
    run_id TEXT NOT NULL,
    unit_id TEXT NOT NULL,
    step INTEGER NOT NULL,
    kind TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    request TEXT NOT NULL,
    completion TEXT,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    unreported_prompt_tokens INTEGER,
    unreported_completion_tokens INTEGER,
    attempts INTEGER NOT NULL DEFAULT 1,
    requested_at DOUBLE PRECISION,
    completed_at DOUBLE PRECISION,
    PRIMARY KEY (run_id, unit_id, step)
);
CREATE TABLE IF NOT EXISTS events (
    seq {serial} PRIMARY KEY,
    run_id TEXT NOT NULL,
    unit_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    at DOUBLE PRECISION NOT NULL,
    payload TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_run ON events (run_id, kind);
"""
#: Columns added after the first release, for journals created before them.
_ADDED_COLUMNS: Final = (("steps", "requested_at"), ("steps", "completed_at"))
_PASSWORD: Final = re.compile(r"(://[^:/@]+:)[^@]+@")


class Cursor(Protocol):
    @property
    def description(self) -> Any: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    def __iter__(self) -> Any: ...


class Database(Protocol):
    """The few operations the journal needs, the same on SQLite and PostgreSQL."""

    def execute(self, sql: str, parameters: Sequence[Any] = ()) -> Cursor: ...
    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None: ...
    def begin(self) -> None: ...
    def commit(self) -> None: ...
    def rollback(self) -> None: ...
    def close(self) -> None: ...


def is_postgres(target: str | Path) -> bool:
    return isinstance(target, str) and target.startswith(("postgresql://", "postgres://"))


def describe(target: str | Path) -> str:
    """`target` fit to print: a PostgreSQL URL without its password."""
    return _PASSWORD.sub(r"\1[redacted]@", str(target))


def open_database(target: str | Path) -> Database:
    """The journal database at `target` (a path, or a `postgresql://` URL), schema in place."""
    if is_postgres(target):
        return _Postgres(str(target))
    path = Path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    return _Sqlite(path)


class _Sqlite:
    def __init__(self, path: Path, attempts: int = 100) -> None:
        """Switching a new file to WAL takes a lock SQLite's busy handler does not wait for, so a
        writer opening the file while another does so retries, briefly."""
        for attempt in range(attempts):
            # one thread at a time, but not always the one that opened it (the journal's writer)
            self._db = sqlite3.connect(path, isolation_level=None, timeout=10.0, check_same_thread=False)
            try:
                self._db.execute("PRAGMA busy_timeout=10000")
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
                self._db.executescript(_TABLES.format(serial="INTEGER"))
                _add_missing_columns(self)
                return
            except sqlite3.OperationalError as error:
                self._db.close()
                if "locked" not in str(error) or attempt == attempts - 1:
                    raise
                time.sleep(0.05)

    def execute(self, sql: str, parameters: Sequence[Any] = ()) -> Cursor:
        return self._db.execute(sql, parameters)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self._db.executemany(sql, rows)

    def begin(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        self._db.execute("COMMIT")

    def rollback(self) -> None:
        self._db.execute("ROLLBACK")

    def close(self) -> None:
        self._db.close()


class _Postgres:
    def __init__(self, url: str) -> None:
        try:
            import psycopg
        except ImportError as error:
            raise ConfigError(
                "a PostgreSQL journal needs psycopg: pip install 'budgetflow[postgres]'"
            ) from error
        self._error = psycopg.Error
        try:
            self._db = psycopg.connect(url, autocommit=True, connect_timeout=10)
        except psycopg.Error as error:
            raise ConfigError(f"cannot connect to the journal {describe(url)}: {error}") from error
        # two writers creating the tables at once would collide in the catalog: one at a time
        self._db.execute("SELECT pg_advisory_lock(7318505)")
        try:
            self._db.execute(_TABLES.format(serial="BIGINT GENERATED ALWAYS AS IDENTITY"))
            _add_missing_columns(self)
        finally:
            self._db.execute("SELECT pg_advisory_unlock(7318505)")

    def execute(self, sql: str, parameters: Sequence[Any] = ()) -> Cursor:
        return self._db.execute(sql.replace("?", "%s"), parameters)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        with self._db.cursor() as cursor:
            cursor.executemany(sql.replace("?", "%s"), rows)

    def begin(self) -> None:
        self._db.execute("BEGIN")

    def commit(self) -> None:
        self._db.execute("COMMIT")

    def rollback(self) -> None:
        self._db.execute("ROLLBACK")

    def close(self) -> None:
        self._db.close()


def _add_missing_columns(db: Database) -> None:
    for table, column in _ADDED_COLUMNS:
        present = {entry[0] for entry in db.execute(f"SELECT * FROM {table} LIMIT 0").description}
        if column not in present:
            db.execute(f"ALTER TABLE {table} ADD COLUMN {column} DOUBLE PRECISION")
