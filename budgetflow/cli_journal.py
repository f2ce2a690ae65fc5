"""The journal on the command line: `eval --journal`, the Ctrl-C message, `budgetflow resume`."""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.markup import escape
from rich.tree import Tree

from budgetflow.cli_output import console, exit_for
from budgetflow.errors import BudgetflowError, ConfigError
from budgetflow.evaluate.session import Journaling
from budgetflow.journal import Journal

__all__ = [
    "JOURNAL_DEFAULT",
    "JournalOpt",
    "JournalOptions",
    "SessionOpt",
    "interrupted",
    "open_journaling",
    "resume_arguments",
    "run_journaled",
]

T = TypeVar("T")

JOURNAL_DEFAULT = ".budgetflow/journal.sqlite"
OUTPUT = "Output"
JournalOpt = Annotated[
    str,
    typer.Option(
        rich_help_panel=OUTPUT,
        help="Journal every request and result is appended to (a killed run resumes from it): a "
        "SQLite file, or a PostgreSQL database as postgresql://USER:PASSWORD@HOST:PORT/DB.",
    ),
]
SessionOpt = Annotated[
    str | None,
    typer.Option(
        rich_help_panel=OUTPUT, help="Resume this session of the journal (budgetflow resume sets it)."
    ),
]
_OWN_OPTIONS = ("--journal", "--session")
_OWN_FLAGS = ("--replay",)


def open_journaling(path: str, session: str | None, config: object, *, replay: bool = False) -> Journaling:
    """The journal at `path` with this invocation recorded as a session (a new one unless
    `session` names one to resume or, with `replay`, to replay without a backend)."""
    from budgetflow import __version__

    journal = Journal(path)
    if session is not None and journal.session(session) is None:
        journal.close()
        raise ConfigError(f"--session {session!r}: no such session in the journal {journal.location}")
    chosen = session or f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    if replay and session is None:
        journal.close()
        raise ConfigError("--replay needs --session (budgetflow replay SESSION sets both)")
    journal.start_session(chosen, command=_own_free(sys.argv[1:]), config=repr(config), version=__version__)
    return Journaling(journal=journal, session=chosen, replay=replay)


def interrupted(journaling: Journaling) -> typer.Exit:
    """What Ctrl-C prints: how much was kept, where, and how to go on."""
    journaling.journal.flush()
    path = journaling.journal.location
    console.print(
        f"interrupted: {journaling.journal.committed} finished calls are saved in {path}; "
        f"resume with: budgetflow resume {journaling.session} --journal {path}",
        soft_wrap=True,
    )
    return typer.Exit(130)


def run_journaled(journaling: Journaling, work: Callable[[], T]) -> T:
    """`work()` (a command's run) with its session closed when it finishes; Ctrl-C says what was
    kept and how to resume, a library error exits with its message, and the journal is closed
    either way."""
    try:
        result = work()
        journaling.journal.finish_session(journaling.session)
        return result
    except KeyboardInterrupt:
        raise interrupted(journaling) from None
    except BudgetflowError as exc:
        raise exit_for(exc) from None
    finally:
        journaling.journal.close()


ReplayOpt = Annotated[
    bool,
    typer.Option(
        rich_help_panel=OUTPUT, help="With --session: answer every call from the journal, send none."
    ),
]


@dataclass(frozen=True)
class JournalOptions:
    """Where a command journals its calls, and which session it resumes or replays."""

    journal: JournalOpt = JOURNAL_DEFAULT
    session: SessionOpt = None
    replay: ReplayOpt = False

    def open(self, config: object) -> Journaling:
        return open_journaling(self.journal, self.session, config, replay=self.replay)


def resume_arguments(session: str, journal: str, *, replay: bool = False) -> list[str]:
    """The `budgetflow` arguments that resume (or, with `replay`, replay) `session`: its own
    command line, pointed at the journal and the session."""
    try:
        recorded = Journal(journal)
        found = recorded.session(session)
        recorded.close()
        if found is None:
            raise ConfigError(f"no session {session!r} in the journal {recorded.location}")
    except BudgetflowError as exc:
        raise exit_for(exc) from None
    command = [*found["command"], "--journal", journal, "--session", session]
    if replay:
        command.append("--replay")
    verb = "replaying" if replay else "resuming"
    console.print(f"{verb} {session}: budgetflow {' '.join(command)}", soft_wrap=True, highlight=False)
    return command


def _own_free(arguments: Sequence[str]) -> list[str]:
    """The command line without --journal/--session (resume adds its own)."""
    kept: list[str] = []
    skip = False
    for argument in arguments:
        if skip:
            skip = False
            continue
        if argument in _OWN_OPTIONS:
            skip = True
            continue
        if argument in _OWN_FLAGS:
            continue
        if argument.startswith(tuple(f"{name}=" for name in _OWN_OPTIONS)):
            continue
        kept.append(argument)
    return kept


def write_trace_page(session: str, journal: str, path: Path) -> None:
    """The session's trace page (`budgetflow.journal.page`) written to `path`."""
    from budgetflow.journal.page import trace_page

    recorded = Journal(journal)
    try:
        page = trace_page(recorded, session)
    finally:
        recorded.close()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(page, encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"--html {path}: cannot write the page: {error}") from error


def trace_tree(session: str, journal: str) -> Tree:
    """A session as a tree: its runs, their units, each unit's answer, spend and why it stopped."""
    recorded = Journal(journal)
    try:
        found = recorded.session(session)
        if found is None:
            raise ConfigError(f"no session {session!r} in the journal {recorded.location}")
        runs = recorded.units(session)
    finally:
        recorded.close()
    state = "finished" if found["finished"] else "not finished (budgetflow resume continues it)"
    tree = Tree(escape(f"{session}: budgetflow {' '.join(found['command'])} — {state}"))
    for run_id, units in sorted(runs.items()):
        scored = [u["score"] for u in units.values() if "score" in u]
        accuracy = f", accuracy {sum(scored) / len(scored):.1%}" if scored else ""
        tokens = sum(u["tokens"] for u in units.values())
        branch = tree.add(
            escape(f"{run_id.removeprefix(session + '/')}: {len(units)} units, {tokens:,} tokens{accuracy}")
        )
        for unit_id, unit in units.items():
            branch.add(escape(_unit_line(unit_id, unit)))
    return tree


def _unit_line(unit_id: str, unit: dict[str, Any]) -> str:
    if "reason" not in unit:
        waiting = f", {unit.get('unfinished_steps', 0)} in flight" if unit.get("unfinished_steps") else ""
        return f"{unit_id}: unfinished ({unit['steps']} steps{waiting}, {unit['tokens']:,} tokens)"
    mark = {1.0: "right", 0.0: "wrong"}.get(unit.get("score", -1.0), "")
    verdict = f" [{mark}]" if mark else ""
    starved = " (starved)" if unit.get("starved") else ""
    return (
        f"{unit_id}: {unit['answer']!r}{verdict} — {unit['reason']}{starved}; "
        f"{unit['steps']} steps, {unit['tokens']:,} tokens"
    )
