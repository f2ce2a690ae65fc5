"""Budget allocation on a bank recorded from the embedded model.

Records (once; cached under results/banks/) a bank of mixed-difficulty reasoning-gym questions
(`arith_mix`: equal shares of 2-3 term, 3-4 term and two-number +/- problems) with K samples and
one greedy answer each, every one with its mean token log-probability, then replays allocators at
several average budgets (samples per question, total over all questions) over many seeds, against
uniform (floor) and the oracle (upper bound). Each adaptive allocator is run with and without the
greedy answer as evidence and with plain or confidence-weighted votes; the variant is chosen on
one half of the bank and scored on the other, both ways (cross-fitted, like compute_optimal's
calibration), so no reported number picked its settings on the questions it is scored on.
The bank is then scored by the likelihood verifier (`budgetflow bank score`: the model's own
log-probability of stating each answer; cached next to the bank), and the variants also include
verifier-weighted votes (v in VERIFIER_WEIGHTS). `uniform_verified` is the uniform allocator with
the greedy answer and verifier-weighted votes (v cross-fitted too): how much of a gain is the vote
rather than the allocation. `oracle` is the issue's: each question's best sample count knowing
its answer distribution, counted by majority vote (with or without the greedy vote);
`oracle_any_vote` also lets each question use the confidence- or verifier-weighted votes, a
stricter bound. `early_stop` runs against vote@K on all samples; `early_stop_verified` is the
same stop rule on verifier-weighted counts (v = 3) with the greedy answer as evidence.
`--no-verifier` leaves the verifier out (the previous benchmark).

    python benchmarks/allocation.py [--questions 150] [--k 16] [--budgets 2 4 8] [--seeds 20]

Prints a table, writes results/allocation.png, and as the last stdout line:
{"budgets": [...], "uniform": [...], "difficulty": [...], "online": [...], "oracle": [...],
 "gap_closed": [...], ...}
where gap_closed = (best allocator - uniform) / (oracle - uniform) at each budget
(gap_closed_any_vote uses oracle_any_vote).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
from collections.abc import Callable
from pathlib import Path

from budgetflow.allocate import Allocator, make_allocator
from budgetflow.answers.voting import Voting
from budgetflow.evaluate.bank import BankQuestion, load_bank, record_bank, write_bank
from budgetflow.evaluate.calibrate import calibrate
from budgetflow.evaluate.datasets import load_dataset
from budgetflow.evaluate.simulate import oracle_accuracy, simulate
from budgetflow.types import SamplingParams

RESULTS = Path(__file__).resolve().parents[1] / "results"
ADAPTIVE = ("difficulty", "online", "compute_optimal")
BANK_VERSION = "v2"  # v2: samples carry mean_logprob
CONFIDENCE_WEIGHTS = (10.0, 20.0)
VERIFIER_WEIGHTS = (1.0, 3.0)


async def _record(
    path: Path, questions: int, k: int, temperature: float, ensemble: bool
) -> list[BankQuestion]:
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
            ensemble=ensemble,
        )
    write_bank(path, bank)
    return bank


def _scored(bank: list[BankQuestion], path: Path, questions: int) -> list[BankQuestion]:
    """The bank with the likelihood verifier's scores (cached at `path`)."""
    if path.is_file():
        print(f"verifier scores: {path} (cached)")
        return load_bank(path)
    from budgetflow.backends.embedded import EmbeddedBackend
    from budgetflow.evaluate.bank import score_bank

    print(f"scoring the bank's answers with the likelihood verifier -> {path} ...", flush=True)

    async def score() -> list[BankQuestion]:
        async with EmbeddedBackend() as backend:
            return await score_bank(bank, load_dataset("arith_mix", limit=questions, seed=0), backend)

    scored = asyncio.run(score())
    write_bank(path, scored)
    return scored


def _cross_fit(
    bank: list[BankQuestion], budget: int, seeds: int, choose: Callable[[list[BankQuestion]], Allocator]
) -> tuple[float, list[Allocator]]:
    """Choose an allocator on one half of the bank and score it on the other, both ways: nothing is
    tuned on the questions it is scored on. Returns the accuracy and the two choices."""
    halves = (bank[::2], bank[1::2])
    correct, chosen = 0.0, []
    for calibration, held_out in (halves, halves[::-1]):
        allocator = choose(calibration)
        result = simulate(held_out, allocator, budget_samples=budget * len(held_out), seeds=seeds)
        correct += result.accuracy * len(held_out)
        chosen.append(allocator)
    return correct / len(bank), chosen


def _cross_fitted(bank: list[BankQuestion], budget: int, seeds: int, verifier: bool) -> float:
    """compute_optimal with its calibration table learnt on the other half, for the vote (majority,
    or verifier-weighted with v in VERIFIER_WEIGHTS) that scores best there."""
    votings = [Voting(), *(Voting(verifier_weight=w) for w in (VERIFIER_WEIGHTS if verifier else ()))]

    def calibrated(calibration: list[BankQuestion]) -> Allocator:
        def table_for(voting: Voting) -> Allocator:
            targets = calibrate(calibration, [budget], voting=voting).targets_for(budget)
            return make_allocator(
                "compute_optimal", bin_targets=targets, verifier_weight=voting.verifier_weight
            )

        def score(allocator: Allocator) -> float:
            total = budget * len(calibration)
            return simulate(calibration, allocator, budget_samples=total, seeds=seeds).accuracy

        return max((table_for(voting) for voting in votings), key=score)

    return _cross_fit(bank, budget, seeds, calibrated)[0]


def _variants(name: str, verifier: bool) -> list[Allocator]:
    """The settings a variant may take: greedy evidence or not; majority or confidence-weighted votes
    (b in CONFIDENCE_WEIGHTS) with the greedy vote worth 1 or 2 samples; with `verifier`, also
    verifier-weighted votes (v in VERIFIER_WEIGHTS)."""
    plain = [make_allocator(name, use_greedy=greedy) for greedy in (False, True)]
    weighted = [
        make_allocator(name, use_greedy=greedy, confidence_weight=weight, greedy_weight=greedy_weight)
        for greedy in (False, True)
        for weight in CONFIDENCE_WEIGHTS
        for greedy_weight in ((1.0, 2.0) if greedy else (1.0,))
    ]
    verified = [
        make_allocator(name, use_greedy=greedy, verifier_weight=weight)
        for greedy in (False, True)
        for weight in (VERIFIER_WEIGHTS if verifier else ())
    ]
    return plain + weighted + verified


def _cross_fitted_variant(
    bank: list[BankQuestion], candidates: list[Allocator], budget: int, seeds: int
) -> tuple[float, list[str]]:
    """The one of `candidates` that scores best on the other half."""

    def best_variant(calibration: list[BankQuestion]) -> Allocator:
        def score(allocator: Allocator) -> float:
            total = budget * len(calibration)
            return simulate(calibration, allocator, budget_samples=total, seeds=seeds).accuracy

        return max(candidates, key=score)

    accuracy, chosen = _cross_fit(bank, budget, seeds, best_variant)
    return accuracy, [_describe(allocator) for allocator in chosen]


def _sweep(
    bank: list[BankQuestion], budgets: list[int], seeds: int, verifier: bool
) -> tuple[dict[str, list[float]], dict[str, list[list[str]]]]:
    names = _series_names(verifier)
    series: dict[str, list[float]] = {name: [] for name in names}
    chosen: dict[str, list[list[str]]] = {name: [] for name in ("difficulty", "online", "uniform_verified")}
    uniform_verified = [
        make_allocator("uniform", use_greedy=True, verifier_weight=weight) for weight in VERIFIER_WEIGHTS
    ]
    for budget in budgets:
        total = budget * len(bank)
        series["uniform"].append(
            simulate(bank, make_allocator("uniform"), budget_samples=total, seeds=seeds).accuracy
        )
        for name in ("difficulty", "online"):
            accuracy, picked = _cross_fitted_variant(bank, _variants(name, verifier), budget, seeds)
            series[name].append(accuracy)
            chosen[name].append(picked)
        series["compute_optimal"].append(_cross_fitted(bank, budget, seeds, verifier))
        if verifier:
            accuracy, picked = _cross_fitted_variant(bank, uniform_verified, budget, seeds)
            series["uniform_verified"].append(accuracy)
            chosen["uniform_verified"].append(picked)
        series["oracle"].append(oracle_accuracy(bank, total))
        votings = (
            Voting(),
            *(Voting(confidence_weight=w) for w in CONFIDENCE_WEIGHTS),
            *(Voting(verifier_weight=w) for w in (VERIFIER_WEIGHTS if verifier else ())),
        )
        series["oracle_any_vote"].append(oracle_accuracy(bank, total, votings=votings))
    return series, chosen


def _series_names(verifier: bool) -> tuple[str, ...]:
    return ("uniform", *(("uniform_verified",) if verifier else ()), *ADAPTIVE, "oracle", "oracle_any_vote")


def _describe(allocator: Allocator) -> str:
    voting = allocator.voting
    if voting.verifier_weight is not None:
        votes = f"verifier v={voting.verifier_weight:g}"
    elif voting.confidence_weight is None:
        votes = "majority"
    else:
        votes = f"conf b={voting.confidence_weight:g}, greedy weight {voting.greedy_weight:g}"
    return ("greedy + " if allocator.use_greedy else "") + votes


def _plot(
    budgets: list[int],
    series: dict[str, list[float]],
    references: dict[str, float],
    path: Path,
    title: str,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8.4, 4.4), dpi=120)
    for name, values in series.items():
        style = "--" if name in ("oracle", "oracle_any_vote", "uniform", "uniform_verified") else "-"
        axes.plot(budgets, [100 * v for v in values], style, marker="o", label=name)
    for (name, value), color in zip(references.items(), ("black", "grey"), strict=False):
        axes.axhline(100 * value, linestyle=":", color=color, label=name)
    axes.set_xscale("log", base=2)
    axes.set_xticks(budgets, [str(b) for b in budgets])
    axes.set_xlabel("average samples per question (total budget / questions)")
    axes.set_ylabel("accuracy (%)")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0))
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
    parser.add_argument(
        "--ensemble",
        action="store_true",
        help="record the samples spread over the task's four few-shot prompts (the greedy answer from "
        "the first); a separate cached bank",
    )
    parser.add_argument(
        "--no-verifier", action="store_true", help="leave the likelihood verifier out of the variants"
    )
    args = parser.parse_args()
    verifier = not args.no_verifier
    suffix = "-ensemble" if args.ensemble else ""
    name = f"arith_mix-{args.questions}-k{args.k}-t{args.temperature}-{BANK_VERSION}{suffix}.jsonl"
    path = RESULTS / "banks" / name
    if path.is_file():
        bank = load_bank(path)
        print(f"bank: {path} (cached)")
    else:
        print(f"recording bank {path} on the embedded model ...", flush=True)
        bank = asyncio.run(_record(path, args.questions, args.k, args.temperature, args.ensemble))
    if verifier:
        bank = _scored(bank, path.with_name(path.stem + "-scored.jsonl"), args.questions)
    greedy = statistics.fmean(bool(q.greedy and q.greedy.correct) for q in bank)
    vote_all = simulate(bank, make_allocator("uniform"), budget_samples=args.k * len(bank), seeds=args.seeds)
    stoppers = {"early_stop": make_allocator("early_stop", cap=args.k)}
    if verifier:  # the stop rule on verifier-weighted counts, with the greedy answer as evidence
        stoppers["early_stop_verified"] = make_allocator(
            "early_stop", cap=args.k, use_greedy=True, verifier_weight=VERIFIER_WEIGHTS[-1]
        )
    early = {
        name: simulate(bank, allocator, budget_samples=args.k * len(bank), seeds=args.seeds)
        for name, allocator in stoppers.items()
    }
    series, chosen = _sweep(bank, args.budgets, args.seeds, verifier)
    best = [max(ADAPTIVE, key=lambda name: series[name][i]) for i in range(len(args.budgets))]
    gap = _gap_closed(series, best, "oracle")
    gap_any = _gap_closed(series, best, "oracle_any_vote")
    RESULTS.mkdir(exist_ok=True)
    plot_path = RESULTS / f"allocation{suffix}{'' if verifier else '-no-verifier'}.png"
    references = {"greedy": greedy, f"uniform vote@{args.k}": vote_all.accuracy}
    sampled = "samples over four few-shot prompts" if args.ensemble else "one prompt"
    title = f"Allocation on the embedded-model bank\n(arith_mix, {sampled})"
    _plot(args.budgets, series, references, plot_path, title)
    stopped = ", ".join(
        f"{name} {result.accuracy:.1%} ({result.tokens:,.0f} tokens, "
        f"{1 - result.tokens / vote_all.tokens:.0%} fewer)"
        for name, result in early.items()
    )
    print(
        f"\n{len(bank)} questions, K={args.k}: greedy {greedy:.1%}, "
        f"uniform vote@{args.k} {vote_all.accuracy:.1%} ({vote_all.tokens:,.0f} tokens), {stopped}"
    )
    names = _series_names(verifier)
    print("| samples/question | " + " | ".join(names) + " | gap closed | vs oracle_any_vote | best variant |")
    print("|---" * (len(names) + 4) + "|")
    for i, budget in enumerate(args.budgets):
        cells = " | ".join(f"{series[name][i]:.1%}" for name in names)
        variant = " / ".join(chosen[best[i]][i]) if best[i] in chosen else "calibrated bins"
        print(f"| {budget} | {cells} | {gap[i]:.0%} ({best[i]}) | {gap_any[i]:.0%} | {variant} |")
    summary: dict[str, object] = {"budgets": args.budgets}
    summary.update({n: [round(v, 4) for v in series[n]] for n in series})
    summary["gap_closed"] = [round(g, 3) for g in gap]
    summary["gap_closed_any_vote"] = [round(g, 3) for g in gap_any]
    summary["best_variant"] = chosen
    summary["greedy"] = round(greedy, 4)
    summary[f"vote@{args.k}"] = round(vote_all.accuracy, 4)
    summary[f"vote@{args.k}_tokens"] = round(vote_all.tokens)
    summary.update(
        {name: {"accuracy": round(r.accuracy, 4), "tokens": round(r.tokens)} for name, r in early.items()}
    )
    print(json.dumps(summary))


def _gap_closed(series: dict[str, list[float]], best: list[str], oracle: str) -> list[float]:
    return [
        (series[name][i] - series["uniform"][i]) / max(1e-9, series[oracle][i] - series["uniform"][i])
        for i, name in enumerate(best)
    ]


if __name__ == "__main__":
    main()
