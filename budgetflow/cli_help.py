"""`--help` that reads well at 80 columns: one plain section per option panel.

Typer's Rich help draws each panel as a five-column table (long name, short name, negative name,
type with its range, help); at 80 columns the help column of a panel with one long flag shrinks
to a dozen characters and long names are cut off (`--question-budget-tok…`). Commands made with
`PanelledCommand`, and groups made with `PanelledGroup`, print click's plain layout instead: a
section per `rich_help_panel`, each option as `-s, --strategy TEXT` with a short metavar, its
help wrapped beside it (or below, when the name is long), default and range after the help.
Errors are printed as typer prints them.

    app = typer.Typer(cls=PanelledGroup)
    app.command("eval", cls=PanelledCommand)(eval_command)
"""

from __future__ import annotations

from typing import Any

import typer.core

__all__ = ["PanelledCommand", "PanelledGroup"]

#: The section of options declared without a panel, and of arguments.
OPTIONS_SECTION = "Options"
ARGUMENTS_SECTION = "Arguments"

#: Short metavars by the option's Python type (typer's `bare_type`); any other type reads TEXT.
_METAVARS = {"int": "INT", "float": "FLOAT", "Path": "PATH"}


class PanelledCommand(typer.core.TyperCommand):
    """A typer command whose help is click's plain layout, sectioned by option panel (errors stay
    as typer prints them)."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        super(typer.core.TyperCommand, self).format_help(ctx, formatter)  # click's, not Rich's

    def format_options(self, ctx: Any, formatter: Any) -> None:
        _format_parameters(self, ctx, formatter)


class PanelledGroup(typer.core.TyperGroup):
    """A typer group (`budgetflow`, `budgetflow bank`) with the same plain help: its options, then
    its commands with their one-line summaries."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        super(typer.core.TyperGroup, self).format_help(ctx, formatter)

    def format_options(self, ctx: Any, formatter: Any) -> None:
        _format_parameters(self, ctx, formatter)
        self.format_commands(ctx, formatter)


def _format_parameters(command: Any, ctx: Any, formatter: Any) -> None:
    """One section per option panel (arguments first), each option beside its help."""
    sections: dict[str, list[tuple[str, str]]] = {}
    for param in command.get_params(ctx):
        record = _help_record(param, ctx)
        if record is not None:
            sections.setdefault(_section_of(param), []).append(record)
    for name in sorted(sections, key=lambda name: name != ARGUMENTS_SECTION):
        with formatter.section(name):
            formatter.write_dl(sections[name])


def _section_of(param: Any) -> str:
    if param.param_type_name == "argument":
        return ARGUMENTS_SECTION
    panel = getattr(param, "rich_help_panel", None)
    return panel if isinstance(panel, str) and panel else OPTIONS_SECTION


def _help_record(param: Any, ctx: Any) -> tuple[str, str] | None:
    """(the option's names and metavar, its help with default and range): typer's help text
    beside a shorter left column."""
    record = param.get_help_record(ctx)
    if record is None:
        return None
    _, help_text = record
    if param.param_type_name == "argument":
        return str(param.metavar or param.name or "").upper(), str(help_text)
    names = ", ".join(sorted(param.opts, key=lambda opt: opt.startswith("--")))
    if param.secondary_opts:
        names += " / " + ", ".join(param.secondary_opts)
    metavar = _metavar(param)
    return (f"{names} {metavar}" if metavar else names), str(help_text)


def _metavar(param: Any) -> str:
    """The option's declared metavar, else a short one by type (none for a flag)."""
    if getattr(param, "is_flag", False):
        return ""
    if param.metavar:
        return str(param.metavar)
    kind = param.bare_type() if hasattr(param, "bare_type") else "str"
    element = kind.removeprefix("list[").removesuffix("]")  # repeatable: one value's metavar
    return _METAVARS.get(element, "TEXT")
