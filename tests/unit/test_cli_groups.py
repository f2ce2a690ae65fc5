"""Option groups: typer sees each group's fields as flat options; the command gets the objects."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import pytest
import typer
from typer.testing import CliRunner

from budgetflow.cli_groups import option_groups


@dataclass(frozen=True)
class Greeting:
    name: Annotated[str, typer.Option(help="Who to greet.")] = "world"
    times: Annotated[int, typer.Option(min=1, help="How often.")] = 1


@dataclass(frozen=True)
class Style:
    shout: Annotated[bool, typer.Option(help="Upper case.")] = False


@dataclass(frozen=True)
class _Other:
    name: str = "x"


def _app() -> tuple[typer.Typer, list[object]]:
    app = typer.Typer()
    seen: list[object] = []

    @app.command()
    @option_groups
    def hello(
        greeting: Greeting,
        style: Style,
        tail: Annotated[str, typer.Argument(help="Said last.")] = "!",
    ) -> None:
        """Say hello."""
        seen.extend([greeting, style, tail])
        text = " ".join([f"hello {greeting.name}{tail}"] * greeting.times)
        print(text.upper() if style.shout else text)

    return app, seen


def test_a_command_gets_one_object_per_group_from_flat_options() -> None:
    app, seen = _app()
    result = CliRunner().invoke(app, ["--name", "ada", "--times", "2", "--shout", "?"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "HELLO ADA? HELLO ADA?"
    assert seen == [Greeting(name="ada", times=2), Style(shout=True), "?"]


def test_group_defaults_ranges_and_help_are_the_fields_own() -> None:
    app, _ = _app()
    assert CliRunner().invoke(app, []).output.strip() == "hello world!"
    refused = CliRunner().invoke(app, ["--times", "0"])
    assert refused.exit_code == 2 and "--times" in refused.output
    shown = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "80"}).output
    assert "Who to greet." in shown and "--shout" in shown and "Say hello." in shown


def test_two_groups_that_declare_one_option_are_refused_at_import() -> None:
    def clash(greeting: Greeting, other: _Other) -> None: ...

    with pytest.raises(TypeError, match="repeat name"):
        option_groups(clash)
