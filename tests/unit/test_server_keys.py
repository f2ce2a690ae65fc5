"""The SQLite key store: hashed keys, revocation, and budgets that hold under concurrent use."""

from __future__ import annotations

import random
import sqlite3
import threading
from pathlib import Path

import pytest

from budgetflow.server.keys import Grant, KeyStore, Refusal, StoreUnavailable


def test_keys_are_stored_hashed_and_authenticate_until_revoked(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys.sqlite")
    secret = store.create("alice", budget_tokens=1000)
    key = store.authenticate(secret)
    assert key is not None and key.name == "alice" and key.budget_tokens == 1000
    raw = (tmp_path / "keys.sqlite").read_bytes()
    assert secret.encode() not in raw and secret.split("-")[2].encode() not in raw
    assert store.authenticate(secret[:-1] + ("A" if secret[-1] != "A" else "B")) is None
    assert store.authenticate("sk-not-ours") is None
    assert store.revoke(key.id)
    assert store.authenticate(secret) is None
    assert not store.revoke(key.id)  # already revoked


def test_a_reservation_shrinks_to_what_is_left_and_is_refused_below_the_minimum(tmp_path: Path) -> None:
    clock = [1_000_000.0]
    store = KeyStore(tmp_path / "keys.sqlite", clock=lambda: clock[0])
    key = store.authenticate(store.create("bob", budget_tokens=100, period_seconds=3600))
    assert key is not None
    first = store.reserve(key.id, tokens=70, minimum_tokens=10)
    assert isinstance(first, Grant) and first.tokens == 70
    second = store.reserve(key.id, tokens=70, minimum_tokens=10)
    assert isinstance(second, Grant) and second.tokens == 30  # what is left, not a refusal
    third = store.reserve(key.id, tokens=70, minimum_tokens=10)
    assert isinstance(third, Refusal)
    assert third.details["reserved_tokens"] == 100 and third.retry_after is not None
    store.settle(first.id, tokens=20)  # spent less than reserved: the rest is free again
    fourth = store.reserve(key.id, tokens=70, minimum_tokens=10)
    assert isinstance(fourth, Grant) and fourth.tokens == 50
    clock[0] += 3600  # the next period starts empty
    fifth = store.reserve(key.id, tokens=70, minimum_tokens=10)
    assert isinstance(fifth, Grant) and fifth.tokens == 70


def test_open_reservations_are_charged_in_full_on_recovery(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys.sqlite")
    key = store.authenticate(store.create("carol", budget_tokens=500, period_seconds=0))
    assert key is not None
    assert isinstance(store.reserve(key.id, tokens=120, minimum_tokens=1), Grant)
    store.close()
    reopened = KeyStore(tmp_path / "keys.sqlite")
    assert reopened.recover() == 1
    info = reopened.info(key.id)
    assert info is not None and info.spent_tokens == 120 and info.reserved_tokens == 0


def test_concurrent_writers_never_overspend_and_never_refuse_while_room_is_left(tmp_path: Path) -> None:
    """Eight threads, each with its own connection to the same file, reserve and settle 60 times:
    the check and the charge are one transaction, so spend stays within the budget and every
    refusal saw less room than the request's minimum."""
    path = tmp_path / "keys.sqlite"
    setup = KeyStore(path)
    key = setup.authenticate(setup.create("shared", budget_tokens=20_000, period_seconds=0))
    assert key is not None
    refusals: list[Refusal] = []
    spent = [0]
    lock = threading.Lock()

    def client(seed: int) -> None:
        store, rng = KeyStore(path), random.Random(seed)
        for _ in range(60):
            wanted, minimum = rng.randint(50, 600), rng.randint(10, 50)
            outcome = store.reserve(key.id, tokens=wanted, minimum_tokens=minimum)
            if isinstance(outcome, Refusal):
                with lock:
                    refusals.append(outcome)
                continue
            assert outcome.tokens is not None and minimum <= outcome.tokens <= wanted
            used = rng.randint(0, outcome.tokens)
            store.settle(outcome.id, tokens=used)
            with lock:
                spent[0] += used

    threads = [threading.Thread(target=client, args=(seed,)) for seed in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    info = setup.info(key.id)
    assert info is not None
    assert info.spent_tokens == spent[0] <= 20_000
    assert info.reserved_tokens == 0
    for refusal in refusals:
        details = refusal.details
        room = details["budget_tokens"] - details["spent_tokens"] - details["reserved_tokens"]  # type: ignore[operator]
        assert room < details["needed_tokens"]  # type: ignore[operator]


def test_a_broken_store_fails_closed(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys.sqlite")
    secret = store.create("dave", budget_tokens=10)
    store._db.close()
    with pytest.raises(StoreUnavailable):
        store.authenticate(secret)
    with pytest.raises(StoreUnavailable):
        store.reserve("x", tokens=1, minimum_tokens=1)
    assert issubclass(StoreUnavailable, Exception) and sqlite3.sqlite_version
