"""The trace page in a real browser: `budgetflow eval` journals a session against a local stub
endpoint, `budgetflow trace --html` writes the page, and headless Chromium (driven by
Playwright) loads it from disk with every network request refused: the DOM shows the runs, the
questions, one timeline bar per call, the spend curve under the budget line, and a clicked
question's samples. A screenshot is saved to test-artifacts/trace_page.png."""

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

QUESTIONS = 8
BUDGET = 4000
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _answer(payload: dict[str, Any], index: int) -> str:
    question = payload["messages"][-1]["content"].split("Problem:")[-1].strip()
    left, right = (int(part) for part in question.split("+"))
    wrong = zlib.crc32(f"{question}/{payload['seed']}".encode()) % 3 == 0
    return f"<b>{left} + {right}</b> is\nAnswer: {left + right + (1 if wrong else 0)}"


@pytest.fixture
def stub() -> Iterator[StubOpenAIServer]:
    with stub_in_thread(StubOpenAIServer(reply=_answer, max_choices=1, delay=0.05)) as server:
        yield server


def _session(stub: StubOpenAIServer, tmp_path: Path) -> tuple[str, str]:
    """A journaled session of three runs (single, vote@3, the online allocator) on a token
    budget; (journal, session)."""
    data = tmp_path / "sums.jsonl"
    data.write_text(
        "".join(f'{{"question": "{i} + {i + 2}", "answer": {2 * i + 2}}}\n' for i in range(QUESTIONS))
    )
    journal = str(tmp_path / "journal.sqlite")
    command = [
        sys.executable, "-m", "budgetflow", "eval", "--backend", "openai", "--base-url", stub.base_url,
        "--model", "stub", "--dataset", str(data), "-s", "single", "-s", "vote@3", "--concurrency", "3",
        "--allocator", "online", "--budget-samples", "24",
        "--max-tokens", "16", "--seed", "5", "--budget-tokens", str(BUDGET), "--journal", journal,
        "--output", str(tmp_path / "out.json"), "--no-plots",
    ]  # fmt: skip
    subprocess.run(
        command,
        check=True,
        capture_output=True,
        env={**os.environ, "OPENAI_API_KEY": "sk-test-not-a-real-key-000000"},
    )
    reader = Journal(journal)
    (session,) = reader._db.execute("SELECT id FROM sessions").fetchone()
    reader.close()
    return journal, session


def test_the_trace_page_in_headless_chromium(stub: StubOpenAIServer, tmp_path: Path, chromium: str) -> None:
    from playwright.sync_api import sync_playwright

    journal, session = _session(stub, tmp_path)
    page_path = tmp_path / "trace.html"
    trace = [sys.executable, "-m", "budgetflow", "trace", session, "--journal", journal]
    written = subprocess.run(
        [*trace, "--html", str(page_path)],
        capture_output=True,
        text=True,
    )
    assert written.returncode == 0, written.stderr[-2000:]
    html = page_path.read_text()
    assert "http://" not in html.split("<script>")[0] and "<script src" not in html  # self-contained
    blocked: list[str] = []
    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)

        def refuse(route: Any) -> None:
            if not route.request.url.startswith("file://"):
                blocked.append(route.request.url)
                route.abort()
            else:
                route.continue_()

        page.route("**/*", refuse)
        page.goto(page_path.as_uri())
        assert session in page.title()
        runs = page.locator("#runs tbody tr")
        assert runs.count() == 3
        assert runs.nth(0).locator("td").nth(0).inner_text() == "single"
        assert runs.nth(1).locator("td").nth(0).inner_text() == "vote@3"
        assert f"{BUDGET:,} tokens" in runs.nth(0).inner_text()
        assert page.locator("#questions tbody tr").count() == QUESTIONS
        assert page.locator("#timeline rect.call").count() == QUESTIONS  # single: one call each
        assert page.locator("#spend path.spend-curve").count() == 1
        assert page.locator("#spend line.budget-line").count() == 1
        runs.nth(1).click()  # vote@3: one step of three samples a question
        calls = page.locator("#timeline rect.call")
        assert calls.count() == QUESTIONS
        assert calls.nth(0).locator("title").text_content().split(": n=")[1].startswith("3,")
        note = page.locator("#timeline-note").inner_text()
        in_flight = int(note.split("at most ")[1].split(" ")[0])
        assert 2 <= in_flight <= 3  # three questions at a time, each call held 50 ms by the stub
        spent = page.locator("#spend-note").inner_text()
        assert f"of {BUDGET:,} tokens spent" in spent
        page.locator("#questions tbody tr").nth(1).click()
        samples = page.locator("#samples tbody tr")
        assert samples.count() == 3
        assert samples.nth(0).inner_text().count("<b>1 + 3</b>") == 1  # texts shown, never parsed
        assert page.locator("#timeline rect.call.highlight").count() == 1
        assert "1 + 3" in page.locator("#unit-question").inner_text()
        decisions = page.locator("#decisions tbody tr")
        assert decisions.count() == 2  # draw three, then finish with the majority
        assert "majority" in decisions.nth(1).inner_text()
        runs.nth(2).click()  # the allocator: each question's draws and why, and why it stopped
        assert runs.nth(2).locator("td").nth(0).inner_text() == "alloc:online@24"
        assert "Stopped: online:" in page.locator("#timeline-note").inner_text()
        page.locator("#questions tbody tr").nth(0).click()
        reasons = page.locator("#decisions tbody tr").all_inner_texts()
        assert reasons and all("online" in reason for reason in reasons)
        assert any("greedy answer first" in reason for reason in reasons)
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "trace_page.png"), full_page=True)
        browser.close()
    assert blocked == [] and errors == []
    data = json.loads(html.split("const TRACE = ")[1].split(";\n")[0])
    assert [run["name"] for run in data["runs"]] == ["single", "vote@3", "alloc:online@24"]
