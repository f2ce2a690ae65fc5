"""Prompt templates live in files beside this module; `{question}` marks where the question goes."""

from __future__ import annotations

from functools import cache
from importlib import resources

from budgetflow.errors import ConfigError

__all__ = ["load_prompt", "render_prompt"]


@cache
def load_prompt(name: str) -> str:
    """The text of template `name` (a file `name.txt` in this package)."""
    path = resources.files(__package__).joinpath(f"{name}.txt")
    if not path.is_file():
        raise ConfigError(f"no prompt template named {name!r}")
    return path.read_text(encoding="utf-8")


def render_prompt(name: str, *, question: str) -> str:
    """Template `name` with `{question}` replaced (other braces are left alone)."""
    return load_prompt(name).replace("{question}", question.strip())
