"""Reports beside the JSON results: a Markdown table and PNG plots people would rather look at.

* `*-pareto.png`  accuracy vs total tokens, every run a point, the Pareto frontier drawn through
                  the runs no other run beats on both;
* `*-time.png`    accuracy vs wall time;
* `*-spend.png`   completion tokens per question, questions sorted from easiest to hardest (the
                  mean score over all runs), one line per run: where each policy spent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from budgetflow.evaluate.runner import StrategyReport

__all__ = ["pareto_frontier", "plot_reports", "write_markdown"]


def write_markdown(reports: list[StrategyReport], path: Path) -> None:
    lines = [
        "| run | accuracy | completion tokens | prompt tokens | wall s | starved |",
        "|---|---|---|---|---|---|",
    ]
    for report in reports:
        starved = sum(r.budget_exhausted for r in report.results)
        lines.append(
            f"| {report.strategy} | {report.accuracy:.1%} | {report.completion_tokens:,} | "
            f"{report.prompt_tokens:,} | {report.wall_seconds:.1f} | {starved} |"
        )
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


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
    import matplotlib.pyplot as plt

    written = []
    costs = {
        "pareto": [float(r.prompt_tokens + r.completion_tokens) for r in reports],
        "time": [r.wall_seconds for r in reports],
    }
    labels = {"pareto": "total tokens (prompt + completion)", "time": "wall time (s)"}
    for suffix, cost in costs.items():
        label = labels[suffix]
        figure, axes = plt.subplots(figsize=(6.4, 4.4), dpi=120)
        points = [(x, 100 * r.accuracy) for x, r in zip(cost, reports, strict=True)]
        for (x, y), report in zip(points, reports, strict=True):
            axes.scatter([x], [y], s=36)
            axes.annotate(report.strategy, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
        frontier = pareto_frontier(points)
        axes.plot(
            [points[i][0] for i in frontier],
            [points[i][1] for i in frontier],
            "--",
            color="gray",
            label="Pareto frontier",
        )
        axes.set_xlabel(label)
        axes.set_ylabel("accuracy (%)")
        axes.set_title(f"{reports[0].dataset}: accuracy vs {suffix if suffix == 'time' else 'tokens'}")
        written.append(_save(figure, axes, stem.with_name(f"{stem.name}-{suffix}.png")))
    written.append(_plot_spend(reports, stem))
    return written


def _save(figure: Any, axes: Any, path: Path) -> Path:
    """Grid, legend, tight layout; write the PNG and free the figure."""
    import matplotlib.pyplot as pyplot

    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    pyplot.close(figure)
    return path


def _plot_spend(reports: list[StrategyReport], stem: Path) -> Path:
    import matplotlib.pyplot as pyplot

    ids = [r.id for r in reports[0].results]
    mean_score = {
        qid: sum(rep.results[i].score for rep in reports) / len(reports) for i, qid in enumerate(ids)
    }
    order = sorted(range(len(ids)), key=lambda i: (-mean_score[ids[i]], i))
    figure, axes = pyplot.subplots(figsize=(6.4, 4.4), dpi=120)
    for report in reports:
        axes.plot(
            range(len(order)), [report.results[i].completion_tokens for i in order], label=report.strategy
        )
    axes.set_xlabel("questions, easiest to hardest (mean score over all runs)")
    axes.set_ylabel("completion tokens spent")
    axes.set_title(f"{reports[0].dataset}: where each run spent")
    return _save(figure, axes, stem.with_name(f"{stem.name}-spend.png"))
