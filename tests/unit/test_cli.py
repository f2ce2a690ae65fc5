"""The CLI end to end against the local stub server (the real model is in tests/integration)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from budgetflow.cli import app

runner = CliRunner()


def test_eval_against_an_openai_endpoint_prints_a_table_and_writes_json(
    stub_url: str, tmp_path: Path
) -> None:
    data = tmp_path / "qs.jsonl"
    data.write_text('{"q": "3 + 4", "a": 7}\n{"q": "2 + 2", "a": 4}\n')
    output = tmp_path / "out.json"
    result = runner.invoke(
        app,
        [
            "eval", "--backend", "openai", "--base-url", stub_url, "--model", "stub",
            "--dataset", str(data), "--question-field", "q", "--answer-field", "a",
            "-s", "single", "-s", "vote@3", "--output", str(output),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "single" in result.stdout and "vote@3" in result.stdout and "50.0%" in result.stdout
    document = json.loads(output.read_text())
    assert [r["strategy"] for r in document["reports"]] == ["single", "vote@3"]
    vote = document["reports"][1]
    assert vote["accuracy"] == 0.5 and vote["questions"] == 2
    assert vote["results"][0]["sample_answers"] == ["7", "7", "7"]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--dataset", "nope"], "unknown dataset 'nope'"),
        (["--strategy", "tree"], "unknown strategy 'tree'"),
        (["--backend", "openai"], "needs --base-url and --model"),
        (["--backend", "carrier-pigeon"], "--backend must be embedded or openai"),
        (["--model-path", "/nonexistent/model.gguf"], "does not exist"),
        (["--limit", "0"], "Invalid value for '--limit'"),
        (["--backend-concurrency", "0"], "Invalid value for '--backend-concurrency'"),
        (["--requests-per-minute", "-5"], "Invalid value for '--requests-per-minute': must be > 0"),
        (["--budget-tokens", "-1"], "Invalid value for '--budget-tokens'"),
        (["--top-p", "0"], "Invalid value for '--top-p'"),
    ],
)
def test_bad_input_exits_2_with_a_clear_message(arguments: list[str], message: str, tmp_path: Path) -> None:
    # --max-tokens 1 keeps the run short should an argument ever become valid
    result = runner.invoke(
        app, ["eval", *arguments, "--max-tokens", "1", "--output", str(tmp_path / "o.json")]
    )
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())


def test_malformed_jsonl_names_the_line(tmp_path: Path) -> None:
    data = tmp_path / "broken.jsonl"
    data.write_text('{"question": "1", "answer": "1"}\n{oops\n')
    result = runner.invoke(app, ["eval", "--dataset", str(data)])
    assert result.exit_code == 2
    assert "broken.jsonl:2: not valid JSON" in " ".join(result.output.split())


@pytest.mark.parametrize("base_url", ["http://127.0.0.1:9/v1", "http://127.0.0.1:9/[red]v1:x:"])
def test_unreachable_endpoint_fails_with_exit_1(tmp_path: Path, base_url: str) -> None:
    """The message names the URL as the user wrote it: no Rich markup eaten, no percent-encoding."""
    result = runner.invoke(
        app,
        ["eval", "--backend", "openai", "--base-url", base_url, "--model", "m", "--limit", "1",
         "--output", str(tmp_path / "o.json")],
    )  # fmt: skip
    assert result.exit_code == 1
    assert f"cannot connect to {base_url}/chat/completions" in " ".join(result.output.split())


def test_help_explains_every_eval_option() -> None:
    result = runner.invoke(app, ["eval", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for option in ("--dataset", "--strategy", "--limit", "--backend", "--base-url", "--threads", "--output"):
        assert option in result.output


@pytest.mark.parametrize(
    "command",
    [["--help"], ["eval", "--help"], ["run", "--help"], ["bank", "--help"], ["bank", "tune", "--help"]],
)
def test_help_reads_at_80_columns(command: list[str]) -> None:
    """Every line fits 80 columns, no option name is cut short, and options sit under their
    panel's heading (`eval`: Dataset, Budgets, Allocation, Output, …)."""
    result = runner.invoke(app, command, env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "…" not in result.output
    if command == ["eval", "--help"]:
        headings = [line for line in lines if line and not line.startswith(" ") and line.endswith(":")]
        assert headings[:3] == ["Dataset:", "Strategies and sampling:", "Budgets:"]
        assert "Allocation:" in headings and "Output:" in headings
        budgets = lines[lines.index("Budgets:") : lines.index("Allocation:")]
        assert any(line.startswith("  --question-budget-tokens INT") for line in budgets)
        assert "  -s, --strategy TEXT" in result.output
        assert "  --greedy-evidence / --no-greedy-evidence" in result.output


def test_cost_budget_with_a_price_table(stub_url: str, tmp_path: Path) -> None:
    data = tmp_path / "qs.jsonl"
    data.write_text("".join(f'{{"question": "{i} + 7", "answer": 7}}\n' for i in range(6)))
    common = [
        "eval", "--backend", "openai", "--base-url", stub_url, "--model", "stub", "--dataset", str(data),
        "-s", "vote@4", "--max-tokens", "16", "--output", str(tmp_path / "o.json"), "--no-plots",
    ]  # fmt: skip
    # each question reserves about 60 prompt + 64 completion tokens = ~$0.000124 at $1/M: two fit, not six
    result = runner.invoke(app, [*common, "--budget-cost", "0.0003", "--price", "stub=1,1"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "o.json").read_text())["reports"][0]
    assert report["budget_exhausted_questions"] > 0
    spent = sum(r["prompt_tokens"] + r["completion_tokens"] for r in report["results"])
    assert spent / 1e6 <= 0.0003
    unpriced = runner.invoke(app, [*common, "--budget-cost", "1"])
    assert unpriced.exit_code == 2 and "no price for model 'stub'" in " ".join(unpriced.output.split())
    malformed = runner.invoke(app, [*common, "--price", "stub=cheap"])
    assert malformed.exit_code == 2 and "MODEL=PROMPT,COMPLETION" in malformed.output


def test_progress_spend_counts_every_settled_reservation() -> None:
    """The progress bar's spend is what the ledger settled — a cancelled racer's conservative
    charge included — not only what replies reported."""
    import io

    from rich.console import Console
    from rich.progress import Progress

    from budgetflow.cli_eval import _ProgressView
    from budgetflow.events import BudgetReserved, BudgetSettled
    from budgetflow.types import Spend

    progress = Progress(console=Console(file=io.StringIO()))
    view = _ProgressView(progress, "single", 2, None)
    reserved = Spend(40, 64, 0, 1)
    view(BudgetReserved(ledger="run/q0", reservation_id=1, amount=reserved))
    view(BudgetSettled(ledger="run/q0", reservation_id=1, reserved=reserved, actual=Spend(40, 12, 0, 1)))
    view(BudgetSettled(ledger="run/q1", reservation_id=2, reserved=reserved, actual=Spend(40, 64, 0, 1)))
    assert progress.tasks[0].fields["spend"] == f"{40 + 12 + 40 + 64:,} tok"
