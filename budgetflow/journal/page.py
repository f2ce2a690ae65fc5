"""`budgetflow trace SESSION --html out.html`: a session as one self-contained page.

The page (`trace_page.html`, plain HTML, CSS and JavaScript, no network) shows the session's runs
with their spend and status; for the chosen run, its questions (answer, right or wrong, why the
strategy stopped, tokens), a timeline of its calls laid out in lanes so what ran in parallel is
side by side, the spend curve against the run's token budget, and, for a clicked question, its
text, every sample and every step. The data is the journal's, embedded as JSON.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from budgetflow.errors import ConfigError
from budgetflow.journal.store import Journal

__all__ = ["page_data", "trace_page"]

#: Longest sample or question text kept in the page (characters).
TEXT_LIMIT = 4000


def trace_page(journal: Journal, session_id: str) -> str:
    """The HTML page of session `session_id` of `journal`."""
    data = json.dumps(page_data(journal, session_id)).replace("</", "<\\/")
    template = resources.files("budgetflow.journal").joinpath("trace_page.html").read_text("utf-8")
    return template.replace("/*TRACE_DATA*/null", data)


def page_data(journal: Journal, session_id: str) -> dict[str, Any]:
    """What the page draws: the session, and per run its budget, questions and calls."""
    found = journal.session(session_id)
    if found is None:
        raise ConfigError(f"no session {session_id!r} in the journal {journal.location}")
    runs: dict[str, dict[str, Any]] = {}
    for event in journal.events_of(session_id, ("RunStarted",)):
        run = _run(runs, event["run_id"], session_id)
        run.update(questions=event["questions"], budget_tokens=event["budget_tokens"])
        run["budget_samples"] = event["budget_samples"]
    for step in journal.steps_of(session_id):
        _add_step(journal, _run(runs, step["run_id"], session_id), step)
    kinds = ("UnitFinished", "QuestionFinished", "StrategyDecided", "AllocatorDecided")
    for event in journal.events_of(session_id, kinds):
        run = _run(runs, event["run_id"], session_id)
        if event["kind"].endswith("Decided"):
            _add_decision(run, event)
            continue
        unit = _unit(run, event["unit_id"])
        if event["kind"] == "UnitFinished":
            unit.update(answer=event["answer"], reason=event["reason"], starved=event["starved"])
            unit["status"] = "starved" if event["starved"] else "finished"
        else:
            unit["score"] = event["score"]
    for run in runs.values():
        _relative_times(run)
    return {
        "session": {"id": session_id, **found},
        "runs": list(runs.values()),
    }


def _run(runs: dict[str, dict[str, Any]], run_id: str, session_id: str) -> dict[str, Any]:
    if run_id not in runs:
        runs[run_id] = {
            "id": run_id,
            "name": run_id.removeprefix(f"{session_id}/"),
            "questions": None,
            "budget_tokens": None,
            "budget_samples": None,
            "units": {},
            "calls": [],
            "stopped": "",
        }
    return runs[run_id]


def _unit(run: dict[str, Any], unit_id: str) -> dict[str, Any]:
    units: dict[str, dict[str, Any]] = run["units"]
    if unit_id not in units:
        units[unit_id] = {
            "id": unit_id,
            "question": "",
            "answer": None,
            "score": None,
            "reason": "",
            "starved": False,
            "status": "unfinished",
            "steps": [],
            "samples": [],
            "decisions": [],
            "tokens": 0,
        }
    return units[unit_id]


def _add_step(journal: Journal, run: dict[str, Any], step: dict[str, Any]) -> None:
    unit = _unit(run, step["unit_id"])
    request, completion = step["request"], step["completion"]
    if not unit["question"] and request["messages"]:
        unit["question"] = journal.text(request["messages"][-1][1])[:TEXT_LIMIT]
    tokens = (step["prompt_tokens"] or 0) + (step["completion_tokens"] or 0)
    unit["tokens"] += tokens
    call = {
        "unit": step["unit_id"],
        "step": step["step"],
        "kind": step["kind"],
        "n": request["n"],
        "temperature": request["sampling"].get("temperature"),
        "attempts": step["attempts"],
        "prompt_tokens": step["prompt_tokens"],
        "completion_tokens": step["completion_tokens"],
        "start": step["requested_at"],
        "end": step["completed_at"],
        "finished": completion is not None,
    }
    unit["steps"].append(call)
    run["calls"].append(call)
    if completion is None:
        return
    for text, reason in zip(completion["texts"], completion["finish_reasons"], strict=True):
        unit["samples"].append(
            {"step": step["step"], "text": journal.text(text)[:TEXT_LIMIT], "finish_reason": reason}
        )


def _add_decision(run: dict[str, Any], event: dict[str, Any]) -> None:
    """A strategy's or allocator's decision, under its question (an allocator's stop: the run)."""
    who = event.get("strategy") or event.get("allocator") or ""
    if not event["unit_id"]:
        run["stopped"] = f"{who}: {event['reason']}"
        return
    reason = event["reason"] or (f"answer {event['answer']!r}" if event.get("answer") else "")
    decision = {"by": who, "action": event["action"], "n": event["n"], "reason": reason}
    _unit(run, event["unit_id"])["decisions"].append(decision)


def _relative_times(run: dict[str, Any]) -> None:
    """Call times as seconds from the run's first call; units as a list."""
    starts = [call["start"] for call in run["calls"] if call["start"] is not None]
    origin = min(starts) if starts else 0.0
    for call in run["calls"]:
        for edge in ("start", "end"):
            if call[edge] is not None:
                call[edge] = round(call[edge] - origin, 4)
    run["units"] = list(run["units"].values())
