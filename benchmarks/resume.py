"""Resume after SIGKILL: `budgetflow eval` killed at random points, then `budgetflow resume`.

A fault-free stub endpoint (50 ms a request, one choice per request, replies fixed by question
and seed) runs in this process; each trial runs `budgetflow eval` (vote@3 over --questions
questions, >= 200 HTTP calls) as its own process with a fresh journal, SIGKILLs it once a random
number of its calls have finished (the journal polled at random instants, so some kills land
while it writes the journal) and resumes it. Checked per trial, at the
endpoint and in the results: no call whose completion the journal held was sent again; every
question answered (no lost result); answers equal an uninterrupted reference run's; the resumed
ledger equals the reference's spend (the replayed calls' tokens counted once, plus the
ambiguous calls re-sent).

    python benchmarks/resume.py [--trials 20] [--questions 80] [--postgres]

With --postgres every trial's journal is a fresh database on a throwaway PostgreSQL server on
127.0.0.1 (Debian's postgresql; `scripts/test_services.sh` installs it) instead of a SQLite file.

Last stdout line: {"trials": …, "resent_finished_calls": 0, "lost_results": 0,
"answer_mismatches": 0, "ambiguous_calls": …, "killed_mid_run": …, …} (a trial whose run
finished before the kill landed counts in "trials" but not in "killed_mid_run")
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

from budgetflow.journal import Journal
from budgetflow.testing import StubOpenAIServer
from budgetflow.testing.postgres import PostgresServer
from budgetflow.testing.serving import stub_in_thread


def reply(payload: dict[str, Any], index: int) -> str:
    question = payload["messages"][-1]["content"].split("Problem:")[-1].strip()
    left, right = (int(part) for part in question.split("+"))
    wrong = zlib.crc32(f"{question}/{payload['seed']}".encode()) % 3 == 0
    return f"Answer: {left + right + (1 if wrong else 0)}"


def command(endpoint: StubOpenAIServer, data: Path, journal: Path | str, output: Path) -> list[str]:
    return [
        sys.executable, "-m", "budgetflow", "eval", "--backend", "openai", "--base-url",
        endpoint.base_url, "--model", "stub", "--dataset", str(data), "-s", "vote@3",
        "--concurrency", "4", "--max-tokens", "16", "--seed", "5", "--limit", "100000",
        "--journal", str(journal), "--output", str(output), "--no-plots",
    ]  # fmt: skip


def answers(output: Path) -> list[str | None]:
    return [r["answer"] for r in json.loads(output.read_text())["reports"][0]["results"]]


def finished_seeds(journal: str) -> set[int]:
    reader = Journal(journal)
    try:
        rows = reader._db.execute("SELECT request FROM steps WHERE completion IS NOT NULL").fetchall()
        return {int(seed) for (request,) in rows for seed in json.loads(request)["seeds"]}
    finally:
        reader.close()


def session_of(journal: str) -> str:
    reader = Journal(journal)
    try:
        return str(reader._db.execute("SELECT id FROM sessions").fetchone()[0])
    finally:
        reader.close()


def trial(
    endpoint: StubOpenAIServer,
    folder: Path,
    data: Path,
    reference: list[str | None],
    rng: random.Random,
    journal: str,
) -> dict[str, int]:
    env = {**os.environ, "OPENAI_API_KEY": "sk-bench-00000000"}
    output = folder / "out.json"
    Journal(journal).close()  # the tables exist before the run: a kill at start-up leaves them
    process = subprocess.Popen(
        command(endpoint, data, journal, output),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(rng.uniform(0.8, 3.0))  # start-up is ~0.7 s; the run takes ~2.5 s more
    process.send_signal(signal.SIGKILL)
    process.wait(30)
    kept = finished_seeds(journal)
    if not kept:
        return {"killed_before_any_result": 1}
    served = endpoint.served_requests
    resumed = subprocess.run(
        [sys.executable, "-m", "budgetflow", "resume", session_of(journal), "--journal", journal],
        env=env,
        capture_output=True,
        text=True,
    )
    if resumed.returncode != 0:
        raise RuntimeError(resumed.stderr[-2000:])
    sent_again = {int(p["seed"]) for p in endpoint.payloads[served:]}
    got = answers(output)
    report = json.loads(output.read_text())["reports"][0]
    return {
        "resent_finished_calls": len(kept & sent_again),
        "lost_results": sum(answer is None for answer in got) - sum(a is None for a in reference),
        "answer_mismatches": sum(a != b for a, b in zip(got, reference, strict=True)),
        "ambiguous_calls": int(report["ambiguous_calls"]),
        "replayed_calls": int(report["replayed_calls"]),
        "killed_before_any_result": int(not kept),
        "killed_mid_run": int(len(kept) < 3 * len(reference)),
    }


def main(args: argparse.Namespace) -> None:
    rng = random.Random(args.seed)
    totals: dict[str, int] = {}
    stub = StubOpenAIServer(reply=reply, max_choices=1, delay=0.05)
    with contextlib.ExitStack() as stack:
        endpoint = stack.enter_context(stub_in_thread(stub))
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        postgres = stack.enter_context(PostgresServer()) if args.postgres else None
        data = folder / "sums.jsonl"
        data.write_text(
            "".join(
                f'{{"question": "{i} + {i + 2}", "answer": {2 * i + 2}}}\n' for i in range(args.questions)
            )
        )
        reference_out = folder / "reference.json"
        subprocess.run(
            command(endpoint, data, folder / "reference.sqlite", reference_out),
            check=True,
            capture_output=True,
        )
        reference = answers(reference_out)
        print("| trial | replayed | ambiguous | re-sent finished | mismatches |\n|---|---|---|---|---|")
        for index in range(args.trials):
            trial_folder = folder / f"trial-{index}"
            trial_folder.mkdir()
            journal = postgres.new_database() if postgres else str(trial_folder / "journal.sqlite")
            outcome = trial(endpoint, trial_folder, data, reference, rng, journal)
            for name, value in outcome.items():
                totals[name] = totals.get(name, 0) + value
            print(
                f"| {index} | {outcome.get('replayed_calls', 0)} | {outcome.get('ambiguous_calls', 0)} | "
                f"{outcome.get('resent_finished_calls', 0)} | {outcome.get('answer_mismatches', 0)} |",
                flush=True,
            )
    summary: dict[str, Any] = {"trials": args.trials, "questions": args.questions}
    summary["journal"] = "postgresql" if args.postgres else "sqlite"
    for name in (
        "killed_mid_run",
        "resent_finished_calls",
        "lost_results",
        "answer_mismatches",
        "ambiguous_calls",
        "replayed_calls",
        "killed_before_any_result",
    ):
        summary[name] = totals.get(name, 0)
    print(json.dumps(summary))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--questions", type=int, default=80)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--postgres", action="store_true", help="journal in PostgreSQL, not SQLite")
    main(parser.parse_args())
