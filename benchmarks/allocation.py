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
from budgetflow.allocate.policies import make_allocator
from budgetflow.allocate.simulate import oracle_accuracy, simulate
from budgetflow.evaluate.datasets import load_dataset
from budgetflow.types import SamplingParams

RESULTS = Path(__file__).resolve().parents[1] / "results"


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
    size = len(bank)
    greedy = statistics.fmean(bool(q.greedy and q.greedy.correct) for q in bank)
    vote_all = simulate(bank, make_allocator("uniform"), budget_samples=args.k * size, seeds=args.seeds)
    early = simulate(
        bank, make_allocator("early_stop", cap=args.k), budget_samples=args.k * size, seeds=args.seeds
    )
    series: dict[str, list[float]] = {"uniform": [], "difficulty": [], "online": [], "oracle": []}
    best_names: list[str] = []
    for budget in args.budgets:
        total = budget * size
        series["uniform"].append(
            simulate(bank, make_allocator("uniform"), budget_samples=total, seeds=args.seeds).accuracy
        )
        for name in ("difficulty", "online"):
            variants = [
                simulate(bank, make_allocator(name, use_greedy=g), budget_samples=total, seeds=args.seeds)
                for g in (False, True)
            ]
            series[name].append(max(v.accuracy for v in variants))
        series["oracle"].append(oracle_accuracy(bank, total))
        best_names.append("difficulty" if series["difficulty"][-1] >= series["online"][-1] else "online")
    gap = [
        (max(series["difficulty"][i], series["online"][i]) - series["uniform"][i])
        / max(1e-9, series["oracle"][i] - series["uniform"][i])
        for i in range(len(args.budgets))
    ]
    RESULTS.mkdir(exist_ok=True)
    _plot(args.budgets, series, RESULTS / "allocation.png")
    print(
        f"\n{size} questions, K={args.k}: greedy {greedy:.1%}, uniform vote@{args.k} {vote_all.accuracy:.1%} "
        f"({vote_all.tokens:,.0f} tokens), early_stop {early.accuracy:.1%} ({early.tokens:,.0f} tokens, "
        f"{1 - early.tokens / vote_all.tokens:.0%} fewer)"
    )
    print(
        "| samples/question | uniform | difficulty | online | oracle | gap closed |\n"
        "|---|---|---|---|---|---|"
    )
    for i, budget in enumerate(args.budgets):
        print(
            f"| {budget} | {series['uniform'][i]:.1%} | {series['difficulty'][i]:.1%} "
            f"| {series['online'][i]:.1%} | {series['oracle'][i]:.1%} | {gap[i]:.0%} ({best_names[i]}) |"
        )
    print(
        json.dumps(
            {
                "budgets": args.budgets,
                **{name: [round(v, 4) for v in values] for name, values in series.items()},
                "gap_closed": [round(g, 3) for g in gap],
            }
        )
    )


if __name__ == "__main__":
    main()
