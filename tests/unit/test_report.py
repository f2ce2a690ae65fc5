"""The Markdown table and plots beside eval results."""

from __future__ import annotations

from pathlib import Path

from budgetflow.budget import Budget
from budgetflow.evaluate.report import accuracy_interval, plot_reports, run_tokens, write_markdown
from budgetflow.evaluate.runner import QuestionResult, StrategyReport
from budgetflow.types import Spend


def _report(name: str, scores: list[float], *, spent: int = 0, starved: int = 0) -> StrategyReport:
    results = [
        QuestionResult(
            id=f"q{i}", gold="1", answer="1", score=score, samples=1, prompt_tokens=10,
            completion_tokens=5, seconds=0.1, reason="r", budget_exhausted=i < starved,
        )
        for i, score in enumerate(scores)
    ]  # fmt: skip
    return StrategyReport(
        strategy=name,
        dataset="d",
        results=results,
        wall_seconds=1.0,
        spent=Spend(prompt_tokens=spent),
        budget=Budget(total_tokens=5000),
    )


def test_a_run_is_charged_every_token_its_ledger_spent() -> None:
    """A verifier's or judge's tokens are in the ledger, not in the per-question sample counts."""
    assert run_tokens(_report("bon", [1.0, 0.0], spent=2408)) == 2408
    assert run_tokens(_report("plain", [1.0, 0.0])) == 30  # no ledger: the questions' own sums


def test_the_accuracy_interval_holds_the_accuracy_and_shrinks_with_more_questions() -> None:
    small = _report("a", [1.0, 0.0] * 5)
    large = _report("a", [1.0, 0.0] * 200)
    low, high = accuracy_interval(small)
    assert low <= small.accuracy <= high and high - low > 0.2
    large_low, large_high = accuracy_interval(large)
    assert large_high - large_low < (high - low) / 3
    assert accuracy_interval(_report("b", [1.0] * 10)) == (1.0, 1.0)


def test_plots_and_table_are_written_with_intervals_and_starved_counts(tmp_path: Path) -> None:
    reports = [_report("vote@4", [1.0, 0.0, 1.0], spent=900, starved=2), _report("single", [0.0, 0.0, 1.0])]
    written = plot_reports(reports, tmp_path / "eval")
    assert [p.name for p in written] == ["eval-pareto.png", "eval-time.png", "eval-spend.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in written)
    write_markdown(reports, tmp_path / "eval.md")
    table = (tmp_path / "eval.md").read_text()
    assert "| vote@4 | 66.7% (" in table and "| 900 |" in table and table.rstrip().endswith("| 0 |")
    assert "| 2 |" in table  # vote@4's two starved questions
