"""The run journal: a run stopped mid-way resumes without sending (or paying for) a finished call
again and ends with the answers and spend of an uninterrupted run; a changed run is refused;
secrets never reach the file; the file grows with the samples, not the prompts."""

from __future__ import annotations

import asyncio
import threading
import zlib
from pathlib import Path
from typing import Any

import pytest

from budgetflow.backends.openai import OpenAICompatibleBackend
from budgetflow.errors import ConfigError
from budgetflow.evaluate import load_jsonl
from budgetflow.evaluate.datasets import Dataset
from budgetflow.evaluate.runner import QuestionResult, StrategyReport, evaluate
from budgetflow.events import EventStream, UnitCompleted
from budgetflow.journal import Journal, redact
from budgetflow.strategies import Vote
from budgetflow.strategies.base import Strategy
from budgetflow.strategies.best_of_n import BestOfN
from budgetflow.strategies.verifiers import JudgeVerifier
from budgetflow.testing import StubOpenAIServer
from budgetflow.types import SamplingParams

SAMPLING = SamplingParams(max_tokens=16, seed=7)


@pytest.fixture(params=["sqlite", "postgres"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where the journal lives: a SQLite file, or a database on a real PostgreSQL server."""
    if request.param == "postgres":
        return str(request.getfixturevalue("postgres_url"))
    return str(tmp_path / "journal.sqlite")


def _answer(payload: dict[str, Any], index: int) -> str:
    """A reply fixed by the question and the sample's seed, right two times in three (a judge's
    verdict, yes or no, fixed by the prompt and seed)."""
    content = payload["messages"][-1]["content"]
    if "Proposed solution" in content:
        return "yes" if zlib.crc32(f"{content}/{payload.get('seed')}".encode()) % 2 else "no"
    question = content.split("Problem:")[-1].strip()
    left, right = (int(part) for part in question.split("+"))
    seed = int(payload["seed"])
    wrong = zlib.crc32(f"{question}/{seed}".encode()) % 3 == 0
    return f"Answer: {left + right + (1 if wrong else 0)}"


def _dataset(tmp_path: Path, count: int = 12) -> Dataset:
    data = tmp_path / "sums.jsonl"
    data.write_text(
        "".join(f'{{"question": "{i} + {i + 2}", "answer": {2 * i + 2}}}\n' for i in range(count))
    )
    return load_jsonl(data)


async def _run(
    dataset: Dataset,
    server: StubOpenAIServer,
    journal: Journal | None,
    *,
    run_id: str = "s1/vote@3",
    stop_after: int | None = None,
    strategy: Strategy | None = None,
) -> StrategyReport | None:
    """One journaled run; with `stop_after`, cancelled once that many questions finished (a
    crash: nothing is cleaned up but what asyncio cancellation does)."""
    events = EventStream(run_id)
    recorded = None
    if journal is not None:
        journal.attach(events)
        recorded = journal.recorded(run_id)
    finished: list[QuestionResult] = []
    enough = asyncio.Event()

    def on_result(result: QuestionResult) -> None:
        finished.append(result)
        if stop_after is not None and len(finished) >= stop_after:
            enough.set()

    backend = OpenAICompatibleBackend(base_url=server.base_url, model="stub", api_key="k")
    async with backend:
        task = asyncio.ensure_future(
            evaluate(
                dataset,
                strategy or Vote(n=3),
                backend,
                sampling=SAMPLING,
                concurrency=3,
                events=events,
                on_result=on_result,
                recorded=recorded,
            )
        )
        if stop_after is None:
            return await task
        await enough.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    return None


def test_a_stopped_run_resumes_without_resending_finished_calls(tmp_path: Path, where: str) -> None:
    dataset = _dataset(tmp_path)

    async def main() -> tuple[StrategyReport, StrategyReport, set[int], int]:
        async with StubOpenAIServer(reply=_answer, max_choices=1, delay=0.01) as reference_server:
            reference = await _run(dataset, reference_server, None)
        journal = Journal(where)
        async with StubOpenAIServer(reply=_answer, max_choices=1, delay=0.01) as first:
            await _run(dataset, first, journal, stop_after=5)
        finished_seeds = _finished_seeds(journal)
        finished_steps = sum(step.finished for step in journal.recorded("s1/vote@3").values())
        async with StubOpenAIServer(reply=_answer, max_choices=1) as second:
            resumed = await _run(dataset, second, journal)
        second_seeds = {int(p["seed"]) for p in second.payloads}
        journal.close()
        assert reference is not None and resumed is not None
        return reference, resumed, finished_seeds & second_seeds, finished_steps

    reference, resumed, resent, finished = asyncio.run(main())
    assert finished >= 5  # the five finished questions' calls, at least
    assert resent == set()  # no finished call was sent again
    assert [r.answer for r in resumed.results] == [r.answer for r in reference.results]
    assert resumed.spent.total_tokens == reference.spent.total_tokens  # replayed spend counted once
    assert resumed.replayed_calls == finished
    assert resumed.ambiguous_calls >= 0


def test_judge_calls_are_journaled_and_answered_from_the_journal_again(tmp_path: Path, where: str) -> None:
    """A verifier's judge calls are steps of their question's unit: a resumed (here: finished)
    run sends none of them again, and the judged answers come out the same."""
    dataset = _dataset(tmp_path, count=4)
    judged = BestOfN(verifier=JudgeVerifier(samples=2), n=3)

    async def main() -> tuple[StrategyReport, StrategyReport, int, int]:
        journal = Journal(where)
        async with StubOpenAIServer(reply=_answer, max_choices=1) as first:
            report = await _run(dataset, first, journal, run_id="s1/best_of_n", strategy=judged)
            sent = first.served_requests
        async with StubOpenAIServer(reply=_answer, max_choices=1) as second:
            again = await _run(dataset, second, journal, run_id="s1/best_of_n", strategy=judged)
            resent = second.served_requests
        journal.close()
        assert report is not None and again is not None
        return report, again, sent, resent

    report, again, sent, resent = asyncio.run(main())
    assert sent == 4 * (3 + 3 * 2)  # per question: three samples, two judge verdicts for each
    assert resent == 0
    assert [r.answer for r in again.results] == [r.answer for r in report.results]
    assert again.spent.total_tokens == report.spent.total_tokens
    assert again.replayed_calls == 4 * (1 + 3)  # one draw step and three judge steps a question


def _finished_seeds(journal: Journal) -> set[int]:
    """The seeds of every finished journaled sample (each sample's seed is base + j)."""
    import json

    seeds: set[int] = set()
    for (request,) in journal._db.execute("SELECT request FROM steps WHERE completion IS NOT NULL"):
        seeds.update(int(seed) for seed in json.loads(request)["seeds"])
    return seeds


def test_resuming_with_a_changed_strategy_is_refused(tmp_path: Path, where: str) -> None:
    dataset = _dataset(tmp_path, count=4)

    async def main() -> None:
        journal = Journal(where)
        async with StubOpenAIServer(reply=_answer) as server:
            await _run(dataset, server, journal)
            named = r"journal mismatch.*step 1.*\(n: 3 in the journal, 4 now\)"
            with pytest.raises(ConfigError, match=named):
                await _run(dataset, server, journal, strategy=Vote(n=4))
        journal.close()

    asyncio.run(main())


def test_secrets_never_reach_the_journal(tmp_path: Path) -> None:
    secret = "sk-live-9f8e7d6c5b4a39281706"
    path = tmp_path / "journal.sqlite"
    journal = Journal(path)
    journal.start_session(
        "s",
        command=["eval", "--api-key", secret],
        config=f"headers={{'Authorization': 'Bearer {secret}'}}",
        version="x",
    )
    journal.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert secret.encode() not in raw and b"[redacted]" in raw
    assert redact("key bf-abc123def456-XYZ and Bearer tok.en") == "key [redacted] and Bearer [redacted]"
    assert redact("postgresql://me:hunter22@db:5432/j") == "postgresql://me:[redacted]@db:5432/j"


def test_secrets_never_reach_a_postgres_journal(postgres_url: str) -> None:
    secret = "sk-live-9f8e7d6c5b4a39281706"
    journal = Journal(postgres_url)
    journal.start_session("s", command=["eval", "--api-key", secret], config=secret, version="x")
    stored = journal._db.execute("SELECT command || config FROM sessions").fetchone()[0]
    journal.close()
    assert secret not in stored and "[redacted]" in stored


def test_the_journal_grows_with_samples_not_with_repeated_prompts(tmp_path: Path, where: str) -> None:
    """10,000 samples (1,000 questions x vote@10) sharing a few-shot prompt prefix."""
    dataset = _dataset(tmp_path, count=1000)

    async def main() -> int:
        journal = Journal(where)
        async with StubOpenAIServer(reply=_answer, keep_payloads=False) as server:
            events = EventStream("big/vote@10")
            journal.attach(events)
            backend = OpenAICompatibleBackend(base_url=server.base_url, model="stub", api_key="k")
            async with backend:
                report = await evaluate(
                    dataset, Vote(n=10), backend, sampling=SAMPLING, concurrency=16, events=events
                )
        counts = journal.counts()
        size = _postgres_bytes(journal) if where.startswith("postgresql") else 0
        journal.close()
        assert sum(r.samples for r in report.results) == 10_000
        assert counts["steps"] == 1000
        return size

    size = asyncio.run(main()) or sum(p.stat().st_size for p in tmp_path.glob("journal.sqlite*"))
    kind = "postgresql" if where.startswith("postgresql") else "sqlite"
    print(f"journal ({kind}): {size:,} bytes for 10,000 samples")
    assert size < 6 * 1024 * 1024, f"{size:,} bytes for 10,000 samples"


def _postgres_bytes(journal: Journal) -> int:
    """What the journal's tables (with their indexes and TOAST) take on the PostgreSQL server."""
    journal._db.execute("VACUUM")
    sizes = [
        journal._db.execute("SELECT pg_total_relation_size(?::regclass)", (table,)).fetchone()[0]
        for table in ("sessions", "steps", "events", "texts")
    ]
    return int(sum(sizes))


def test_two_writers_on_one_journal_lose_nothing(where: str) -> None:
    path = where
    errors: list[BaseException] = []

    def writer(name: str) -> None:
        try:
            journal = Journal(path)
            for index in range(200):
                journal.start_session(f"{name}-{index}", command=[name], config="{}", version="x")
            journal.close()
        except BaseException as error:  # reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert Journal(path).counts()["sessions"] == 400


def test_the_order_replies_arrive_in_changes_neither_the_journal_nor_the_answers(tmp_path: Path) -> None:
    """The same adaptive run twice, with replies arriving in two different orders (each reply
    waits a number of event-loop turns fixed by the question and an order key: deterministic,
    no clocks): the journals hold the same steps and the same per-unit events, and the answers
    are the same (temporalio/sdk-python#1578)."""
    from budgetflow.backends.scripted import FunctionBackend
    from budgetflow.strategies.early_stop import EarlyStop
    from budgetflow.types import Request

    dataset = _dataset(tmp_path, count=16)

    def backend_for(order: int) -> FunctionBackend:
        async def reply(request: Request, index: int) -> str:
            question = request.messages[-1].text.split("Problem:")[-1].strip()
            for _ in range(zlib.crc32(f"{order}/{question}".encode()) % 23):
                await asyncio.sleep(0)
            payload = {"messages": [{"content": request.messages[-1].text}], "seed": seed(request, index)}
            return _answer(payload, 0)

        return FunctionBackend(reply)

    def seed(request: Request, index: int) -> int:
        assert request.sampling.seed is not None
        return request.sampling.seed + index

    def journaled(order: int) -> tuple[list[str | None], list[str], Journal]:
        journal = Journal(tmp_path / f"order-{order}.sqlite")
        events = EventStream("s/early_stop")
        journal.attach(events)
        arrivals: list[str] = []
        events.subscribe(lambda e: arrivals.append(e.unit_id) if isinstance(e, UnitCompleted) else None)
        strategy = EarlyStop(max_samples=8, batch=2)
        report = asyncio.run(
            evaluate(dataset, strategy, backend_for(order), sampling=SAMPLING, concurrency=6, events=events)
        )
        journal.flush()
        return [r.answer for r in report.results], arrivals, journal

    answers_a, arrivals_a, journal_a = journaled(1)
    answers_b, arrivals_b, journal_b = journaled(2)
    assert arrivals_a != arrivals_b  # the replies did arrive in other orders
    assert answers_a == answers_b
    assert _steps(journal_a) == _steps(journal_b)
    assert _unit_events(journal_a) == _unit_events(journal_b)
    assert "" not in _unit_events(journal_a)  # every event is filed under its unit


def _steps(journal: Journal) -> list[tuple[Any, ...]]:
    """Every step by key, without when it was sent or came back."""
    return journal._db.execute(
        "SELECT run_id, unit_id, step, kind, request_hash, request, completion, prompt_tokens, "
        "completion_tokens, attempts FROM steps ORDER BY run_id, unit_id, step"
    ).fetchall()


def _unit_events(journal: Journal) -> dict[str, list[dict[str, Any]]]:
    """Each unit's events in its own order, without times and run-wide counters (request and
    reservation ids are numbered in arrival order across units)."""
    import json

    volatile = {"at", "request_id", "reservation_id", "seconds"}
    by_unit: dict[str, list[dict[str, Any]]] = {}
    rows = journal._db.execute("SELECT kind, unit_id, payload FROM events ORDER BY seq")
    for kind, unit_id, payload in rows:
        fields = {k: v for k, v in json.loads(payload).items() if k not in volatile}
        by_unit.setdefault(unit_id, []).append({"kind": kind, **fields})
    return by_unit


def test_a_step_is_committed_before_it_is_sent_and_its_reply_before_anyone_sees_it(tmp_path: Path) -> None:
    """The journal writes on its own thread; the unit waits for it: when the backend is called,
    another connection already sees the step's request, and when `draw` returns, its completion."""
    import sqlite3

    from budgetflow.backends.scripted import FunctionBackend
    from budgetflow.runtime.context import RunContext
    from budgetflow.types import Request

    path = tmp_path / "journal.sqlite"
    journal = Journal(path)
    observer = sqlite3.connect(path)

    def completion_of(unit_id: str) -> tuple[str | None] | None:
        row = observer.execute("SELECT completion FROM steps WHERE unit_id = ?", (unit_id,)).fetchone()
        return None if row is None else (row[0],)

    seen_when_sent: list[tuple[str | None] | None] = []

    def reply(request: Request, index: int) -> str:
        seen_when_sent.append(completion_of(request.unit_id))
        return "Answer: 4"

    async def main() -> list[tuple[str | None] | None]:
        events = EventStream("s/durable")
        journal.attach(events)
        context = RunContext(FunctionBackend(reply), events=events, seed=1)
        seen_after: list[tuple[str | None] | None] = []
        for index in range(5):
            unit = context.unit(f"q{index}", index=index, kind="question")
            response = await unit.draw(Request.from_prompt("2 + 2?", sampling=SAMPLING))
            assert response is not None
            seen_after.append(completion_of(unit.id))
        return seen_after

    seen_after = asyncio.run(main())
    journal.close()
    assert seen_when_sent == [(None,)] * 5  # the request row was there, its completion not yet
    assert all(row is not None and row[0] is not None for row in seen_after)


def test_a_journal_that_cannot_be_written_stops_the_run(tmp_path: Path) -> None:
    """A write that fails is not swallowed by the writer thread: the run stops with it."""
    import sqlite3

    from budgetflow.backends.scripted import FunctionBackend
    from budgetflow.runtime.context import RunContext
    from budgetflow.types import Request

    path = tmp_path / "journal.sqlite"
    journal = Journal(path)
    sqlite3.connect(path, isolation_level=None).execute("DROP TABLE steps")

    async def main() -> None:
        events = EventStream("s/broken")
        journal.attach(events)
        context = RunContext(FunctionBackend(lambda request, index: "Answer: 4"), events=events)
        unit = context.unit("q0", index=0, kind="question")
        await unit.draw(Request.from_prompt("2 + 2?", sampling=SAMPLING))

    with pytest.raises(ConfigError, match="writing the journal .* failed: no such table: steps"):
        asyncio.run(main())
    with pytest.raises(ConfigError, match="writing the journal"):
        journal.close()
