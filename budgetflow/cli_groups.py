"""Option groups: a command takes a few frozen dataclasses of options instead of fifty parameters.

Typer reads a command's signature, so `option_groups` gives it a flat one made of every group's
fields (each an `Annotated` option from `cli_options`), and calls the command with one object per
group. A command then reads `budgets.run_budget()` rather than five loose values, and a group
declared once serves every command that takes it.

    @dataclass(frozen=True)
    class Greeting:
        name: Annotated[str, typer.Option(help="Who to greet.")] = "world"

    @app.command()
    @option_groups
    def hello(greeting: Greeting) -> None:
        print(f"hello {greeting.name}")
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar, get_type_hints

__all__ = ["option_groups"]

R = TypeVar("R")


def option_groups(command: Callable[..., R]) -> Callable[..., R]:
    """`command` with every dataclass-typed parameter spread into its fields for typer; other
    parameters (typer arguments and options) pass through as they are."""
    hints = get_type_hints(command, include_extras=True)
    declared = inspect.signature(command).parameters
    groups = {name: hints[name] for name in declared if dataclasses.is_dataclass(hints[name])}
    flat: list[inspect.Parameter] = []
    for name, parameter in declared.items():
        if name in groups:
            flat += _fields_as_parameters(groups[name])
        else:
            flat.append(parameter.replace(kind=inspect.Parameter.KEYWORD_ONLY, annotation=hints[name]))
    _refuse_repeated([parameter.name for parameter in flat], command.__name__)

    @functools.wraps(command)
    def grouped(**values: Any) -> R:
        for name, group in groups.items():
            fields = dataclasses.fields(group)
            values[name] = group(**{field.name: values.pop(field.name) for field in fields})
        return command(**values)

    grouped.__signature__ = inspect.Signature(flat)  # type: ignore[attr-defined]
    grouped.__annotations__ = {parameter.name: parameter.annotation for parameter in flat}
    return grouped


def _fields_as_parameters(group: Any) -> list[inspect.Parameter]:
    hints = get_type_hints(group, include_extras=True)
    return [
        inspect.Parameter(
            field.name, inspect.Parameter.KEYWORD_ONLY, default=field.default, annotation=hints[field.name]
        )
        for field in dataclasses.fields(group)
    ]


def _refuse_repeated(names: list[str], command: str) -> None:
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise TypeError(f"{command}: option groups repeat {', '.join(repeated)}")
