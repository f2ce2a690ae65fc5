"""Reports beside the JSON results: a Markdown table and PNG plots people would rather look at.

* `*-pareto.png`  accuracy vs every token the run's ledger spent (samples, judges, verifiers,
                  retries, cancelled racers), each run a point with a 95% bootstrap interval over
                  questions, the Pareto frontier through the runs no other run beats on both, and
                  the token budget when the runs had one;
* `*-time.png`    accuracy vs wall time, with the same intervals;
* `*-spend.png`   tokens per question, questions sorted from easiest to hardest (the mean score
                  over all runs), one line per run: where each policy spent; questions a run could
                  not afford a single sample for (starved) are marked.

Runs are told apart by colour and marker in a legend that also gives each one's accuracy and
spend, so no label is printed over another. Titles give the number of questions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from budgetflow.evaluate.runner import StrategyReport

__all__ = ["accuracy_interval", "pareto_frontier", "plot_reports", "run_tokens", "write_markdown"]

_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*")
BOOTSTRAP_RESAMPLES = 2000


def write_markdown(reports: list[StrategyReport], path: Path) -> None:
    lines = [
        "| run | accuracy (95% CI) | tokens spent | completion tokens | prompt tokens | wall s | starved |",
        "|---|---|---|---|---|---|---|",
    ]
    for report in reports:
        starved = sum(r.budget_exhausted for r in report.results)
        low, high = accuracy_interval(report)
        lines.append(
            f"| {report.strategy} | {report.accuracy:.1%} ({low:.0%}-{high:.0%}) | {run_tokens(report):,} | "
            f"{report.completion_tokens:,} | {report.prompt_tokens:,} | {report.wall_seconds:.1f} | "
            f"{starved} |"
        )
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def run_tokens(report: StrategyReport) -> int:
    """Every token the run's ledger settled; the per-question sums when there was no ledger."""
    return report.spent.total_tokens or report.prompt_tokens + report.completion_tokens


def accuracy_interval(report: StrategyReport, *, confidence: float = 0.95) -> tuple[float, float]:
    """A percentile bootstrap interval for the run's accuracy, resampling its questions."""
    scores = np.array([r.score for r in report.results], dtype=float)
    if len(scores) < 2:  # nothing to resample
        value = float(scores.mean()) if len(scores) else 0.0
        return value, value
    rng = np.random.default_rng(0)
    means = scores[rng.integers(0, len(scores), size=(BOOTSTRAP_RESAMPLES, len(scores)))].mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def pareto_frontier(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points (cost, accuracy) that no other point beats on both, cheapest first."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    frontier: list[int] = []
    best = float("-inf")
    for index in order:
        if points[index][1] > best:
            frontier.append(index)
            best = points[index][1]
    return frontier


def plot_reports(reports: list[StrategyReport], stem: Path) -> list[Path]:
    """Write the three plots next to `stem` (e.g. results/eval -> results/eval-pareto.png)."""
    import matplotlib

    matplotlib.use("Agg")
    written = [
        _plot_accuracy(reports, [float(run_tokens(r)) for r in reports], "tokens spent", stem, "pareto"),
        _plot_accuracy(reports, [r.wall_seconds for r in reports], "wall time (s)", stem, "time"),
        _plot_spend(reports, stem),
    ]
    return written


def _title(reports: list[StrategyReport], what: str) -> str:
    return f"{reports[0].dataset} ({len(reports[0].results)} questions): {what}"


def _plot_accuracy(
    reports: list[StrategyReport], cost: list[float], label: str, stem: Path, suffix: str
) -> Path:
    import matplotlib.pyplot as pyplot

    figure, axes = pyplot.subplots(figsize=(7.2, 4.8), dpi=120)
    points = [(x, 100 * r.accuracy) for x, r in zip(cost, reports, strict=True)]
    for index, ((x, y), report) in enumerate(zip(points, reports, strict=True)):
        low, high = accuracy_interval(report)
        spend = f"{x:,.0f} tok" if suffix == "pareto" else f"{x:.1f} s"
        interval = f"[{100 * low:.0f}-{100 * high:.0f}]"
        axes.errorbar(
            [x], [y], yerr=[[y - 100 * low], [100 * high - y]], fmt=_MARKERS[index % len(_MARKERS)],
            capsize=3, markersize=6, label=f"{report.strategy}: {y:.1f}% {interval}, {spend}",
        )  # fmt: skip
    frontier = pareto_frontier(points)
    axes.plot([points[i][0] for i in frontier], [points[i][1] for i in frontier], "--", color="gray", lw=1)
    budget = _shared_token_budget(reports) if suffix == "pareto" else None
    if budget is not None:
        axes.axvline(budget, color="crimson", lw=1, ls=":", label=f"budget: {budget:,} tokens per run")
    axes.set_xlabel(label)
    axes.set_ylabel("accuracy (%), 95% bootstrap interval")
    axes.set_ylim(bottom=0)
    axes.set_title(_title(reports, f"accuracy vs {label}"), fontsize=10)
    return _save(figure, axes, stem.with_name(f"{stem.name}-{suffix}.png"))


def _shared_token_budget(reports: list[StrategyReport]) -> int | None:
    budgets = {r.budget.total_tokens for r in reports if r.budget is not None}
    return budgets.pop() if len(budgets) == 1 and None not in budgets else None


def _save(figure: Any, axes: Any, path: Path) -> Path:
    """Grid, legend below the axes (it never covers a point), tight layout; write and free."""
    import matplotlib.pyplot as pyplot

    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=1, frameon=False)
    figure.tight_layout()
    figure.savefig(path, bbox_inches="tight")
    pyplot.close(figure)
    return path


def _plot_spend(reports: list[StrategyReport], stem: Path) -> Path:
    import matplotlib.pyplot as pyplot
    from matplotlib.ticker import MaxNLocator

    ids = [r.id for r in reports[0].results]
    mean_score = {
        qid: sum(rep.results[i].score for rep in reports) / len(reports) for i, qid in enumerate(ids)
    }
    order = sorted(range(len(ids)), key=lambda i: (-mean_score[ids[i]], i))
    figure, axes = pyplot.subplots(figsize=(7.2, 4.8), dpi=120)
    ranks = np.arange(1, len(order) + 1)
    for report in reports:
        spent = [report.results[i].prompt_tokens + report.results[i].completion_tokens for i in order]
        (line,) = axes.plot(ranks, spent, label=report.strategy, lw=1.2)
        starved = [rank for rank, i in zip(ranks, order, strict=True) if report.results[i].budget_exhausted]
        if starved:
            axes.scatter(
                starved, [spent[rank - 1] for rank in starved], marker="x", s=40, color=line.get_color(),
                label=f"{report.strategy}: {len(starved)} starved (the budget refused a draw)", zorder=3,
            )  # fmt: skip
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("question rank, easiest to hardest (mean score over all runs)")
    axes.set_ylabel("tokens spent on the question")
    axes.set_title(_title(reports, "where each run spent"), fontsize=10)
    return _save(figure, axes, stem.with_name(f"{stem.name}-spend.png"))
