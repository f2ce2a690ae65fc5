"""Budget allocation on a bank recorded from the embedded model.

Records (once; cached under results/banks/) a bank of mixed-difficulty reasoning-gym questions
(`arith_mix`: equal shares of 2-3 term, 3-4 term and two-number +/- problems) with K samples and
one greedy answer each, then replays allocators at several average budgets (samples per question,
total over all questions) over many seeds, against uniform (floor) and the oracle (upper bound).

    python benchmarks/allocation.py [--questions 150] [--k 16] [--budgets 2 4 8] [--seeds 20]

Prints a table, writes results/allocation.png, and as the last stdout line:
{"budgets": [...], "uniform": [...], "difficulty": [...], "online": [...], "oracle": [...],
 "gap_closed": [...]}
where gap_closed = (best allocator - uniform) / (oracle - uniform) at each budget.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
from pathlib import Path

from budgetflow.allocate.bank import BankQuestion, load_bank, record_bank, write_bank
from budgetflow.allocate.compute_optimal import calibrate
from budgetflow.allocate.policies import make_allocator
from budgetflow.allocate.simulate import oracle_accuracy, simulate
from budgetflow.evaluate.datasets import load_dataset
from budgetflow.types import SamplingParams

RESULTS = Path(__file__).resolve().parents[1] / "results"
ADAPTIVE = ("difficulty", "online", "compute_optimal")


async def _record(path: Path, questions: int, k: int, temperature: float) -> list[BankQuestion]:
    from budgetflow.backends.embedded import EmbeddedBackend

    dataset = load_dataset("arith_mix", limit=questions, seed=0)
    done = [0]

    def progress(_: BankQuestion) -> None:
        done[0] += 1
        if done[0] % 10 == 0:
            print(f"  recorded {done[0]}/{questions}", flush=True)

    async with EmbeddedBackend(max_sequences=max(16, k)) as backend:
        bank = await record_bank(
            dataset,
            backend,
            k=k,
            sampling=SamplingParams(max_tokens=48, seed=0),
            temperature=temperature,
            concurrency=1,
            on_question=progress,
        )
    write_bank(path, bank)
    return bank


def _cross_fitted(bank: list[BankQuestion], budget: int, seeds: int) -> float:
    """compute_optimal, calibrated on one half and scored on the other, both ways (no leakage)."""
    halves = (bank[::2], bank[1::2])
    correct = 0.0
    for calibration, held_out in (halves, halves[::-1]):
        targets = calibrate(calibration, [budget]).targets_for(budget)
        allocator = make_allocator("compute_optimal", bin_targets=targets)
        result = simulate(held_out, allocator, budget_samples=budget * len(held_out), seeds=seeds)
        correct += result.accuracy * len(held_out)
    return correct / len(bank)


def _sweep(bank: list[BankQuestion], budgets: list[int], seeds: int) -> dict[str, list[float]]:
    series: dict[str, list[float]] = {name: [] for name in ("uniform", *ADAPTIVE, "oracle")}
    for budget in budgets:
        total = budget * len(bank)
        series["uniform"].append(
            simulate(bank, make_allocator("uniform"), budget_samples=total, seeds=seeds).accuracy
        )
        for name in ("difficulty", "online"):
            variants = [
                simulate(bank, make_allocator(name, use_greedy=g), budget_samples=total, seeds=seeds).accuracy
                for g in (False, True)
            ]
            series[name].append(max(variants))
        series["compute_optimal"].append(_cross_fitted(bank, budget, seeds))
        series["oracle"].append(oracle_accuracy(bank, total))
    return series


def _plot(budgets: list[int], series: dict[str, list[float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for name, values in series.items():
        style = "--" if name in ("oracle", "uniform") else "-"
        axes.plot(budgets, [100 * v for v in values], style, marker="o", label=name)
    axes.set_xscale("log", base=2)
    axes.set_xticks(budgets, [str(b) for b in budgets])
    axes.set_xlabel("average samples per question (total budget / questions)")
    axes.set_ylabel("accuracy (%)")
    axes.set_title("Allocation on the embedded-model bank (arith_mix)")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--questions", type=int, default=150)
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--temperature", type=float, default=0.5)
    parser.add_argument("--budgets", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--seeds", type=int, default=20)
    args = parser.parse_args()
    path = RESULTS / "banks" / f"arith_mix-{args.questions}-k{args.k}-t{args.temperature}.jsonl"
    if path.is_file():
        bank = load_bank(path)
        print(f"bank: {path} (cached)")
    else:
        print(f"recording bank {path} on the embedded model ...", flush=True)
        bank = asyncio.run(_record(path, args.questions, args.k, args.temperature))
    greedy = statistics.fmean(bool(q.greedy and q.greedy.correct) for q in bank)
    vote_all = simulate(bank, make_allocator("uniform"), budget_samples=args.k * len(bank), seeds=args.seeds)
    early = simulate(
        bank, make_allocator("early_stop", cap=args.k), budget_samples=args.k * len(bank), seeds=args.seeds
    )
    series = _sweep(bank, args.budgets, args.seeds)
    best = [max(ADAPTIVE, key=lambda name: series[name][i]) for i in range(len(args.budgets))]
    gap = [
        (series[best[i]][i] - series["uniform"][i]) / max(1e-9, series["oracle"][i] - series["uniform"][i])
        for i in range(len(args.budgets))
    ]
    RESULTS.mkdir(exist_ok=True)
    _plot(args.budgets, series, RESULTS / "allocation.png")
    print(
        f"\n{len(bank)} questions, K={args.k}: greedy {greedy:.1%}, "
        f"uniform vote@{args.k} {vote_all.accuracy:.1%} "
        f"({vote_all.tokens:,.0f} tokens), early_stop {early.accuracy:.1%} ({early.tokens:,.0f} tokens, "
        f"{1 - early.tokens / vote_all.tokens:.0%} fewer)"
    )
    names = ("uniform", *ADAPTIVE, "oracle")
    print("| samples/question | " + " | ".join(names) + " | gap closed |")
    print("|---" * (len(names) + 2) + "|")
    for i, budget in enumerate(args.budgets):
        cells = " | ".join(f"{series[name][i]:.1%}" for name in names)
        print(f"| {budget} | {cells} | {gap[i]:.0%} ({best[i]}) |")
    summary = {"budgets": args.budgets, **{n: [round(v, 4) for v in series[n]] for n in series}}
    summary["gap_closed"] = [round(g, 3) for g in gap]
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
