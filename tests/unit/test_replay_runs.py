"""`budgetflow replay` of a finished allocation run (the online allocator, whose plan depends on
every answer so far): every answer comes out again with no request sent; the same session
replayed with a changed configuration is refused, naming what changed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from budgetflow.journal import Journal
from budgetflow.testing import StubOpenAIServer
from budgetflow.testing.serving import stub_in_thread

QUESTIONS = 10
ENV = {**os.environ, "OPENAI_API_KEY": "sk-test-not-a-real-key-000000", "COLUMNS": "200"}


def _answer(payload: dict[str, Any], index: int) -> str:
    question = payload["messages"][-1]["content"].split("Problem:")[-1].strip()
    left, right = (int(part) for part in question.split("+"))
    wrong = zlib.crc32(f"{question}/{payload.get('seed')}".encode()) % 3  # 0, 1 or 2 off
    return f"Answer: {left + right + wrong}"


@pytest.fixture
def stub() -> Iterator[StubOpenAIServer]:
    with stub_in_thread(StubOpenAIServer(reply=_answer, max_choices=1)) as server:
        yield server


def _budgetflow(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "budgetflow", *arguments], env=ENV, capture_output=True, text=True
    )


def _report(output: Path) -> dict[str, Any]:
    report: dict[str, Any] = json.loads(output.read_text())["reports"][0]
    return report


def test_replaying_a_finished_allocation_run(stub: StubOpenAIServer, tmp_path: Path) -> None:
    data = tmp_path / "sums.jsonl"
    data.write_text(
        "".join(f'{{"question": "{i} + {i + 2}", "answer": {2 * i + 2}}}\n' for i in range(QUESTIONS))
    )
    journal, output = str(tmp_path / "journal.sqlite"), tmp_path / "out.json"
    command = [
        "eval", "--backend", "openai", "--base-url", stub.base_url, "--model", "stub",
        "--dataset", str(data), "--allocator", "online", "--budget-samples", "40", "--max-tokens", "16",
        "--seed", "3", "--output", str(output), "--no-plots",
    ]  # fmt: skip
    first = _budgetflow(*command, "--journal", journal)
    assert first.returncode == 0, first.stderr[-2000:]
    original = _report(output)
    sent = stub.served_requests
    reader = Journal(journal)
    (session,) = reader._db.execute("SELECT id FROM sessions").fetchone()
    steps = int(reader._db.execute("SELECT COUNT(*) FROM steps").fetchone()[0])
    reader.close()
    counts = [result["samples"] for result in original["results"]]
    assert len(set(counts)) > 1  # the allocator gave questions different numbers of samples

    replayed = _budgetflow("replay", session, "--journal", journal)
    assert replayed.returncode == 0, replayed.stderr[-2000:]
    again = _report(output)
    assert stub.served_requests == sent  # nothing sent
    assert [r["answer"] for r in again["results"]] == [r["answer"] for r in original["results"]]
    assert [r["samples"] for r in again["results"]] == counts  # the same decisions
    assert again["replayed_calls"] == steps and again["spent_total_tokens"] == original["spent_total_tokens"]

    again_changed = [*command, "--temperature", "0.9", "--journal", journal, "--session", session]
    changed = _budgetflow(*again_changed, "--replay")
    message = " ".join(changed.stderr.split())
    assert changed.returncode == 2
    assert "journal mismatch" in message and "sampling.temperature: 0.5 in the journal, 0.9 now" in message
    assert stub.served_requests == sent


def test_bank_record_is_journaled_and_replays_without_a_backend(
    stub: StubOpenAIServer, tmp_path: Path
) -> None:
    data = tmp_path / "sums.jsonl"
    data.write_text("".join(f'{{"question": "{i} + {i + 2}", "answer": {2 * i + 2}}}\n' for i in range(6)))
    journal, bank = str(tmp_path / "journal.sqlite"), tmp_path / "bank.jsonl"
    recorded = _budgetflow(
        "bank", "record", "--output", str(bank), "--dataset", str(data), "--k", "4", "--backend", "openai",
        "--base-url", stub.base_url, "--model", "stub", "--max-tokens", "16", "--journal", journal,
    )  # fmt: skip
    assert recorded.returncode == 0, recorded.stderr[-2000:]
    first = bank.read_text()
    assert len(first.splitlines()) == 6
    assert not bank.with_suffix(".jsonl.partial.jsonl").exists()  # the bank holds it all: no stale copy
    sent = stub.served_requests
    assert sent == 6 * (1 + 4)  # a greedy answer and four samples each, one choice a request
    reader = Journal(journal)
    (session,) = reader._db.execute("SELECT id FROM sessions").fetchone()
    reader.close()
    bank.unlink()
    replayed = _budgetflow("replay", session, "--journal", journal)
    assert replayed.returncode == 0, replayed.stderr[-2000:]
    assert stub.served_requests == sent
    assert _untimed(bank.read_text()) == _untimed(first)  # every answer, logprob and token again


def _untimed(bank: str) -> list[dict[str, Any]]:
    """A bank's questions without the seconds each sample took (wall-clock, not replayed)."""
    questions = [json.loads(line) for line in bank.splitlines()]
    for question in questions:
        for sample in [question["greedy"], *question["samples"]]:
            sample.pop("seconds")
    return questions
