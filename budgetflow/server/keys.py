"""API keys with budgets, in SQLite: created, listed and revoked by `budgetflow keys`, checked and
charged by the server.

A key is shown once, when created (`bf-<id>-<secret>`); the store keeps only its SHA-256 (the
secret is 32 random bytes: a fast hash of a high-entropy secret is what GitHub and Stripe keep
too). Each key may have a token budget and a dollar budget per period (a day, an hour, any number
of seconds, or for its whole life) and a request rate.

Budgets hold under concurrency because the check and the charge are one SQLite transaction
(`BEGIN IMMEDIATE`): `reserve` grants a request its worst case — or, when less is left, what is
left, down to the request's minimum — and records the reservation; `settle` replaces it with
what was spent. Reservations still open when a server starts (it was killed mid-request: the
upstream may have billed) are charged in full by `recover`. Any SQLite failure is an error the
server answers 503: it fails closed.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sqlite3
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from budgetflow.errors import BudgetflowError, ConfigError
from budgetflow.types import PICODOLLARS_PER_DOLLAR

__all__ = ["Grant", "KeyInfo", "KeyStore", "Refusal", "StoreUnavailable", "parse_period"]

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    secret_sha256 TEXT NOT NULL,
    budget_tokens INTEGER,
    budget_pico INTEGER,
    period_seconds INTEGER,
    requests_per_minute REAL,
    created REAL NOT NULL,
    revoked REAL
);
CREATE TABLE IF NOT EXISTS spend (
    key_id TEXT NOT NULL,
    period_start INTEGER NOT NULL,
    spent_tokens INTEGER NOT NULL DEFAULT 0,
    spent_pico INTEGER NOT NULL DEFAULT 0,
    reserved_tokens INTEGER NOT NULL DEFAULT 0,
    reserved_pico INTEGER NOT NULL DEFAULT 0,
    requests INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (key_id, period_start)
);
CREATE TABLE IF NOT EXISTS reservations (
    id TEXT PRIMARY KEY,
    key_id TEXT NOT NULL,
    period_start INTEGER NOT NULL,
    tokens INTEGER NOT NULL,
    pico INTEGER NOT NULL,
    at REAL NOT NULL
);
"""
PERIODS: Final = {"hour": 3600, "day": 86_400, "week": 7 * 86_400, "month": 30 * 86_400, "total": 0}


class StoreUnavailable(BudgetflowError):
    """The key store cannot be read or written: the server refuses requests (fails closed)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyInfo:
    id: str
    name: str
    budget_tokens: int | None
    budget_pico: int | None
    period_seconds: int
    requests_per_minute: float | None
    created: float
    revoked: float | None
    spent_tokens: int = 0
    spent_pico: int = 0
    reserved_tokens: int = 0

    @property
    def budget_dollars(self) -> float | None:
        return None if self.budget_pico is None else self.budget_pico / PICODOLLARS_PER_DOLLAR


@dataclass(frozen=True, slots=True, kw_only=True)
class Grant:
    """A reservation: at most `tokens` tokens and `pico` picodollars (None: no such limit)."""

    id: str
    tokens: int | None
    pico: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Refusal:
    """Not even the request's minimum fits: what is left, and when the period renews."""

    message: str
    retry_after: float | None
    details: dict[str, int | None] = field(default_factory=dict)


def parse_period(text: str) -> int:
    """`day`, `hour`, `week`, `month`, `total`, or a number of seconds."""
    if text in PERIODS:
        return PERIODS[text]
    try:
        seconds = int(text)
    except ValueError:
        raise ConfigError(f"--period must be {', '.join(PERIODS)} or seconds, got {text!r}") from None
    if seconds < 0:
        raise ConfigError(f"--period must be >= 0 seconds, got {seconds}")
    return seconds


class KeyStore:
    """The SQLite file at `path` (WAL, a busy timeout); one connection, used from one thread at a
    time (the server runs it on a dedicated thread)."""

    def __init__(self, path: Path | str, *, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self._clock = clock
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=5.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except (sqlite3.Error, OSError) as error:
            raise StoreUnavailable(f"cannot open the key store {self.path}: {error}") from error

    def close(self) -> None:
        self._db.close()

    def create(
        self,
        name: str,
        *,
        budget_tokens: int | None = None,
        budget_dollars: float | None = None,
        period_seconds: int = PERIODS["day"],
        requests_per_minute: float | None = None,
    ) -> str:
        """A new key (the only time its secret is shown)."""
        if budget_tokens is not None and budget_tokens < 0:
            raise ConfigError(f"--budget-tokens must be >= 0, got {budget_tokens}")
        if budget_dollars is not None and budget_dollars < 0:
            raise ConfigError(f"--budget-dollars must be >= 0, got {budget_dollars}")
        if requests_per_minute is not None and requests_per_minute <= 0:
            raise ConfigError(f"--rpm must be > 0, got {requests_per_minute}")
        key_id = uuid.uuid4().hex[:12]
        secret = f"bf-{key_id}-{secrets.token_urlsafe(32)}"
        pico = None if budget_dollars is None else round(budget_dollars * PICODOLLARS_PER_DOLLAR)
        with self._transaction():
            self._db.execute(
                "INSERT INTO keys VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL)",
                (
                    key_id,
                    name,
                    _digest(secret),
                    budget_tokens,
                    pico,
                    period_seconds,
                    requests_per_minute,
                    self._clock(),
                ),
            )
        return secret

    def revoke(self, key_id: str) -> bool:
        with self._transaction():
            cursor = self._db.execute(
                "UPDATE keys SET revoked = ? WHERE id = ? AND revoked IS NULL", (self._clock(), key_id)
            )
        return cursor.rowcount == 1

    def list(self) -> list[KeyInfo]:
        with self._errors():
            rows = self._db.execute("SELECT id FROM keys ORDER BY created").fetchall()
        return [info for (key_id,) in rows if (info := self.info(key_id)) is not None]

    def info(self, key_id: str) -> KeyInfo | None:
        with self._errors():
            row = self._db.execute(
                "SELECT id, name, budget_tokens, budget_pico, period_seconds, requests_per_minute, created, "
                "revoked FROM keys WHERE id = ?",
                (key_id,),
            ).fetchone()
            if row is None:
                return None
            period = self._period_start(row[4])
            spend = self._db.execute(
                "SELECT spent_tokens, spent_pico, reserved_tokens FROM spend "
                "WHERE key_id = ? AND period_start = ?",
                (key_id, period),
            ).fetchone() or (0, 0, 0)
        return KeyInfo(
            id=row[0],
            name=row[1],
            budget_tokens=row[2],
            budget_pico=row[3],
            period_seconds=row[4],
            requests_per_minute=row[5],
            created=row[6],
            revoked=row[7],
            spent_tokens=spend[0],
            spent_pico=spend[1],
            reserved_tokens=spend[2],
        )

    def authenticate(self, secret: str) -> KeyInfo | None:
        """The live (not revoked) key `secret` belongs to, or None."""
        parts = secret.split("-", 2)
        if len(parts) != 3 or parts[0] != "bf":
            return None
        with self._errors():
            row = self._db.execute(
                "SELECT secret_sha256, revoked FROM keys WHERE id = ?", (parts[1],)
            ).fetchone()
        if row is None or row[1] is not None or not hmac.compare_digest(row[0], _digest(secret)):
            return None
        return self.info(parts[1])

    def reserve(
        self, key_id: str, *, tokens: int, minimum_tokens: int, pico: int = 0, minimum_pico: int = 0
    ) -> Grant | Refusal:
        """Atomically grant up to `tokens` (and `pico`) within what the key has left this period,
        never less than the minimum; a `Refusal` saying why when even that does not fit."""
        with self._transaction():
            row = self._db.execute(
                "SELECT budget_tokens, budget_pico, period_seconds FROM keys WHERE id = ?", (key_id,)
            ).fetchone()
            if row is None:
                return Refusal(message=f"key {key_id} does not exist", retry_after=None)
            budget_tokens, budget_pico, period_seconds = row
            period = self._period_start(period_seconds)
            self._db.execute(
                "INSERT OR IGNORE INTO spend (key_id, period_start) VALUES (?, ?)", (key_id, period)
            )
            spent_tokens, spent_pico, reserved_tokens, reserved_pico = self._db.execute(
                "SELECT spent_tokens, spent_pico, reserved_tokens, reserved_pico FROM spend "
                "WHERE key_id = ? AND period_start = ?",
                (key_id, period),
            ).fetchone()
            granted_tokens = _grant(budget_tokens, spent_tokens + reserved_tokens, tokens, minimum_tokens)
            granted_pico = _grant(budget_pico, spent_pico + reserved_pico, pico, minimum_pico)
            if granted_tokens is False or granted_pico is False:
                refusal = self._refusal(
                    budget_tokens, budget_pico, spent_tokens, reserved_tokens, period, period_seconds
                )
                refusal.details.update(needed_tokens=minimum_tokens, needed_pico=minimum_pico)
                return refusal
            grant = Grant(id=uuid.uuid4().hex, tokens=granted_tokens, pico=granted_pico)
            held_tokens, held_pico = granted_tokens or 0, granted_pico or 0
            self._db.execute(
                "UPDATE spend SET reserved_tokens = reserved_tokens + ?, reserved_pico = reserved_pico + ?, "
                "requests = requests + 1 WHERE key_id = ? AND period_start = ?",
                (held_tokens, held_pico, key_id, period),
            )
            self._db.execute(
                "INSERT INTO reservations VALUES (?, ?, ?, ?, ?, ?)",
                (grant.id, key_id, period, held_tokens, held_pico, self._clock()),
            )
        return grant

    def settle(self, grant_id: str, *, tokens: int, pico: int = 0) -> None:
        """Replace reservation `grant_id` with what was spent (never more than was granted)."""
        with self._transaction():
            row = self._db.execute(
                "SELECT key_id, period_start, tokens, pico FROM reservations WHERE id = ?", (grant_id,)
            ).fetchone()
            if row is None:
                return
            key_id, period, held_tokens, held_pico = row
            self._db.execute(
                "UPDATE spend SET reserved_tokens = reserved_tokens - ?, reserved_pico = reserved_pico - ?, "
                "spent_tokens = spent_tokens + ?, spent_pico = spent_pico + ? "
                "WHERE key_id = ? AND period_start = ?",
                (held_tokens, held_pico, tokens, pico, key_id, period),
            )
            self._db.execute("DELETE FROM reservations WHERE id = ?", (grant_id,))

    def recover(self) -> int:
        """Charge every open reservation in full (its request was in flight when a server
        stopped; the upstream may have billed it); how many there were."""
        with self._transaction():
            rows = self._db.execute("SELECT id, tokens, pico FROM reservations").fetchall()
        for grant_id, tokens, pico in rows:
            self.settle(grant_id, tokens=tokens, pico=pico)
        return len(rows)

    def _refusal(
        self,
        budget_tokens: int | None,
        budget_pico: int | None,
        spent: int,
        reserved: int,
        period: int,
        period_seconds: int,
    ) -> Refusal:
        renews = period + period_seconds - self._clock() if period_seconds else None
        limits = []
        if budget_tokens is not None:
            limits.append(
                f"{spent:,} of {budget_tokens:,} tokens spent, {reserved:,} reserved by requests in flight"
            )
        if budget_pico is not None:
            limits.append(f"dollar budget ${budget_pico / PICODOLLARS_PER_DOLLAR:.4f}")
        when = f"; it renews in {renews:.0f} s" if renews is not None else "; it does not renew"
        return Refusal(
            message=f"this key's budget cannot fit the request ({'; '.join(limits)}){when}",
            retry_after=None if renews is None else max(1.0, renews),
            details={
                "budget_tokens": budget_tokens,
                "spent_tokens": spent,
                "reserved_tokens": reserved,
                "budget_pico": budget_pico,
            },
        )

    def _period_start(self, period_seconds: int) -> int:
        if not period_seconds:
            return 0
        now = int(self._clock())
        return now - now % period_seconds

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db, self.path)

    def _errors(self) -> _Transaction:
        return _Transaction(self._db, self.path, begin=False)


class _Transaction:
    """`BEGIN IMMEDIATE` … `COMMIT` (rolled back on error); SQLite errors become `StoreUnavailable`."""

    def __init__(self, db: sqlite3.Connection, path: Path, *, begin: bool = True) -> None:
        self._db = db
        self._path = path
        self._begin = begin

    def __enter__(self) -> None:
        if self._begin:
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as error:
                raise StoreUnavailable(f"the key store {self._path} is unavailable: {error}") from error

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if self._begin:
            try:
                self._db.execute("COMMIT" if exc is None else "ROLLBACK")
            except sqlite3.Error as error:
                raise StoreUnavailable(f"the key store {self._path} is unavailable: {error}") from error
        if isinstance(exc, sqlite3.Error):
            raise StoreUnavailable(f"the key store {self._path} is unavailable: {exc}") from exc


def _grant(budget: int | None, committed: int, wanted: int, minimum: int) -> int | bool | None:
    """What a limit of `budget` can grant (None: unlimited; False: not even `minimum` fits)."""
    if budget is None:
        return None
    left = budget - committed
    if left < max(1, minimum):
        return False
    return min(wanted, left)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()
