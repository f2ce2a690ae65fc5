"""The crash test: `budgetflow eval` as a process against a local stub endpoint, SIGKILLed once
some of its calls have finished, then `budgetflow resume`: no finished call reaches the endpoint
twice, and the resumed session answers every question as an uninterrupted one does."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from budgetflow.journal import Journal
from budgetflow.testing import StubOpenAIServer
from budgetflow.testing.serving import stub_in_thread

QUESTIONS = 16


def _answer(payload: dict[str, Any], index: int) -> str:
    question = payload["messages"][-1]["content"].split("Problem:")[-1].strip()
    left, right = (int(part) for part in question.split("+"))
    wrong = zlib.crc32(f"{question}/{payload['seed']}".encode()) % 3 == 0
    return f"Answer: {left + right + (1 if wrong else 0)}"


@pytest.fixture
def stub() -> Iterator[StubOpenAIServer]:
    """A stub endpoint (50 ms a request: the kill lands mid-run) on its own loop in a background thread."""
    with stub_in_thread(StubOpenAIServer(reply=_answer, max_choices=1, delay=0.05)) as server:
        yield server


@pytest.fixture(params=["sqlite", "postgres"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The journal: a SQLite file, or a database on a real PostgreSQL server."""
    if request.param == "postgres":
        return str(request.getfixturevalue("postgres_url"))
    return str(tmp_path / "journal.sqlite")


def _eval(stub: StubOpenAIServer, data: Path, journal: Path | str, output: Path) -> list[str]:
    return [
        sys.executable, "-m", "budgetflow", "eval", "--backend", "openai", "--base-url", stub.base_url,
        "--model", "stub", "--dataset", str(data), "-s", "vote@3", "--concurrency", "2",
        "--max-tokens", "16", "--seed", "5", "--journal", str(journal), "--output", str(output), "--no-plots",
    ]  # fmt: skip


def _finished_steps(journal: Journal) -> int:
    return int(journal._db.execute("SELECT COUNT(*) FROM steps WHERE completion IS NOT NULL").fetchone()[0])


def _answers(output: Path) -> list[str | None]:
    document = json.loads(output.read_text())
    return [result["answer"] for result in document["reports"][0]["results"]]


def test_sigkill_then_resume_sends_no_finished_call_twice(
    stub: StubOpenAIServer, tmp_path: Path, where: str
) -> None:
    data = tmp_path / "sums.jsonl"
    data.write_text(
        "".join(f'{{"question": "{i} + {i + 2}", "answer": {2 * i + 2}}}\n' for i in range(QUESTIONS))
    )
    env = {**os.environ, "OPENAI_API_KEY": "sk-test-not-a-real-key-000000"}
    reference = tmp_path / "reference.json"
    subprocess.run(
        _eval(stub, data, tmp_path / "reference.sqlite", reference), check=True, env=env, capture_output=True
    )
    served_reference = stub.served_requests

    journal, output = where, tmp_path / "out.json"
    reader = Journal(journal)  # the tables exist before the run starts
    process = subprocess.Popen(
        _eval(stub, data, journal, output), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    while _finished_steps(reader) < 6 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait(30)
    assert 6 <= _finished_steps(reader) < QUESTIONS  # killed mid-run, with calls finished
    partial = output.with_suffix(".partial.jsonl")  # finished questions were written at once
    kept_lines = [json.loads(line) for line in partial.read_text().splitlines()]
    assert kept_lines and all(line["run"] == "vote@3" and line["answer"] for line in kept_lines)
    before_resume = stub.served_requests
    sent_before = {int(p["seed"]) for p in stub.payloads[served_reference:before_resume]}
    (session,) = reader._db.execute("SELECT id FROM sessions").fetchone()
    finished = {
        int(seed)
        for (request,) in reader._db.execute("SELECT request FROM steps WHERE completion IS NOT NULL")
        for seed in json.loads(request)["seeds"]
    }
    refused = subprocess.run(  # a replay needs every call in the journal: this session has not
        [sys.executable, "-m", "budgetflow", "replay", session, "--journal", str(journal)],
        env=env,
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 2 and "does not hold" in refused.stderr, refused.stderr[-2000:]
    assert stub.served_requests == before_resume  # and it sent nothing
    resumed = subprocess.run(
        [sys.executable, "-m", "budgetflow", "resume", session, "--journal", str(journal)],
        env=env,
        capture_output=True,
        text=True,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    resent = {int(p["seed"]) for p in stub.payloads[before_resume:]}
    assert finished <= sent_before and not (finished & resent)  # no finished call sent again
    assert _answers(output) == _answers(reference)
    assert "answered from the journal" in resumed.stderr
    assert len(partial.read_text().splitlines()) == QUESTIONS
    stored = reader._db.execute("SELECT command || config FROM sessions").fetchone()[0]
    reader.close()
    assert "sk-test-not-a-real-key" not in stored
    if not journal.startswith("postgresql"):
        assert b"sk-test-not-a-real-key" not in Path(journal).read_bytes()
    document = json.loads(output.read_text())  # what an auditor needs is in the results
    assert document["command"][1:3] == ["resume", session] and document["budgetflow_version"]
    assert document["journal"]["session"] == session and "temperature" not in document["sampling"]
    report = document["reports"][0]
    assert report["temperature"] is not None and report["replayed_calls"] >= 6
    first = report["results"][0]
    assert first["question"] == "0 + 2" and len(first["completions"]) == first["samples"] == 3
    replayed = subprocess.run(  # the finished session again, with no endpoint: the same answers
        [sys.executable, "-m", "budgetflow", "replay", session, "--journal", str(journal)],
        env=env,
        capture_output=True,
        text=True,
    )
    assert replayed.returncode == 0, replayed.stderr[-2000:]
    assert stub.served_requests == before_resume + len(resent)
    assert _answers(output) == _answers(reference)
    traced = subprocess.run(
        [sys.executable, "-m", "budgetflow", "trace", session, "--journal", str(journal)],
        env={**env, "COLUMNS": "200"},
        capture_output=True,
        text=True,
    )
    right = sum(a == str(2 * i + 2) for i, a in enumerate(_answers(reference)))
    assert traced.returncode == 0 and f"vote@3: {QUESTIONS} units" in traced.stdout
    assert f"accuracy {right / QUESTIONS:.1%}" in traced.stdout and "sums-1: '2' [right]" in traced.stdout
