"""`budgetflow eval` end to end on the embedded model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from budgetflow.cli import app

pytestmark = pytest.mark.integration


def test_eval_on_the_embedded_model(tmp_path: Path) -> None:
    output = tmp_path / "eval.json"
    result = CliRunner().invoke(
        app,
        ["eval", "--dataset", "chain_sum", "--limit", "3", "-s", "single", "-s", "vote@2",
         "--threads", "1", "--output", str(output)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    document = json.loads(output.read_text())
    single, vote = document["reports"]
    assert single["strategy"] == "single" and vote["strategy"] == "vote@2"
    assert single["questions"] == vote["questions"] == 3
    assert all(r["samples"] == 1 for r in single["results"])
    assert all(r["samples"] == 2 for r in vote["results"])
    assert vote["completion_tokens"] > single["completion_tokens"] > 0
    assert 0.0 <= single["accuracy"] <= 1.0
    assert "chain_sum, 3 questions" in result.stdout
