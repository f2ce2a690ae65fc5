"""Every ```python block in README.md and docs/*.md runs as a test."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


def _examples() -> list[tuple[str, str]]:
    found = []
    for document in DOCUMENTS:
        for index, code in enumerate(BLOCK.findall(document.read_text(encoding="utf-8"))):
            found.append((f"{document.name}#{index}", code))
    return found


def test_the_readme_has_examples() -> None:
    assert len(_examples()) >= 3


@pytest.mark.parametrize(("name", "code"), _examples(), ids=[name for name, _ in _examples()])
def test_example_runs(name: str, code: str) -> None:
    exec(compile(code, name, "exec"), {"__name__": "__doc_example__"})
