"""Do tuned policies hold on data they were not tuned on? Leave-one-bank-out on recorded banks.

For every bank H in the directory (record them with `bash benchmarks/record_banks.sh`):

* `lobo1`     the policy `budgetflow bank tune` chooses on all the *other* banks pooled (one
              policy for every budget, its default), scored on H (never tuned on H);
* `lobo`      the same with a policy chosen per budget (`bank tune --per-budget`);
* `own`       the policy tuned on H's own questions, cross-fitted (chosen on one half of H,
              scored on the other, both ways): what a user calibrating on their own data gets;
* `sibling`   with --siblings DIR: the policy `bank tune` chooses on H's sibling, a bank of the
              same family with other items (DIR/H.jsonl, recorded with another dataset seed:
              `bash benchmarks/record_banks.sh results/banks-seed2 2`), one policy for every
              budget, scored on the whole of H: a user who calibrates on 120 questions of their
              own kind and then runs their real ones (never tuned on H);
* defaults    what `eval --allocator NAME` runs on the embedded model with no other flag, for
              each adaptive allocator (greedy evidence, confidence-weighted votes);
* baselines   `uniform` (plain votes), `uniform+greedy`, `greedy` alone, `vote@16` (uniform
              majority over all 16 samples), and `oracle` (`bank simulate`'s: the best split of
              the budget knowing every answer distribution).

At each budget (samples per question): accuracy, and gap closed = (policy - uniform) / (oracle -
uniform). Every figure here is out of sample except `oracle`, `uniform`, `greedy` and `vote@16`,
which choose nothing.

    python benchmarks/policies.py [--banks results/banks] [--budgets 2 4 8] [--seeds 8]
                                  [--held-out BANK ...] [--siblings results/banks-seed2]

Prints a table per held-out bank, then one JSON line:
{"banks": [...], "budgets": [...], "lobo": {bank: [...]}, "own": {...}, "default": {...},
 "uniform": {...}, "uniform_greedy": {...}, "oracle": {...}, "greedy": {...}, "vote16": {...},
 "lobo_gap_closed": {...}, "lobo_policies": {...}, "sibling": {...}, "sibling_gap_closed": {...}}
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from budgetflow.allocate.policy import Policy
from budgetflow.cli_options import CONFIDENCE_WEIGHT_DEFAULT, GREEDY_EVIDENCE_DEFAULT
from budgetflow.evaluate.bank import BankQuestion, load_bank
from budgetflow.evaluate.simulate import oracle_accuracy, replay_questions
from budgetflow.evaluate.tune import ALLOCATORS, BASELINE, choose_policies, tune

RESULTS = Path(__file__).resolve().parents[1] / "results"
UNIFORM = Policy(allocator="uniform", use_greedy=False)
#: What `budgetflow eval --allocator NAME` runs on the embedded model with no other flag.
DEFAULTS = {
    name: Policy(
        allocator=name, use_greedy=GREEDY_EVIDENCE_DEFAULT, confidence_weight=CONFIDENCE_WEIGHT_DEFAULT
    )
    for name in ALLOCATORS[1:]
}
#: Fixed policies, the same on every bank: candidates for budgetflow's uncalibrated default.
FIXED = (
    Policy(allocator="online", use_greedy=True),
    Policy(allocator="online", use_greedy=True, confidence_weight=10.0),
    Policy(allocator="online", use_greedy=True, greedy_weight=4.0, confidence_weight=10.0),
    Policy(allocator="online", use_greedy=True, confidence_weight=10.0, verifier_weight=3.0),
    Policy(allocator="uniform", use_greedy=True, confidence_weight=10.0),
    Policy(allocator="difficulty", use_greedy=True),
    Policy(allocator="early_stop", use_greedy=True),
)


def _accuracy(bank: list[BankQuestion], policy: Policy, budget: int, seeds: int) -> float:
    cap = min(len(q.samples) for q in bank)
    replay = replay_questions(bank, policy.build(cap=cap), budget_samples=budget * len(bank), seeds=seeds)
    return float(np.mean(replay.correct))


def _gap(value: float, uniform: float, oracle: float) -> float | None:
    return None if oracle - uniform <= 1e-9 else (value - uniform) / (oracle - uniform)


@dataclass
class HeldOut:
    """One held-out bank's figures, one entry per budget (greedy and vote@16: one number)."""

    lobo: list[float]
    lobo_policies: list[str]
    lobo_one: list[float]
    lobo_one_policy: str
    fixed: dict[str, list[float]]
    own: list[float]
    own_policies: list[str]
    defaults: dict[str, list[float]]
    uniform: list[float]
    uniform_greedy: list[float]
    oracle: list[float]
    greedy: float
    vote16: float
    #: Tuned on the sibling bank (None: no sibling given), and the policy chosen there.
    sibling: list[float] | None = None
    sibling_policy: str = ""

    def gaps(self, values: list[float]) -> list[float | None]:
        return [_gap(v, u, o) for v, u, o in zip(values, self.uniform, self.oracle, strict=True)]


def _with_sibling(
    row: HeldOut, bank: list[BankQuestion], sibling: list[BankQuestion], budgets: list[int], seeds: int
) -> None:
    """Choose on the sibling bank (never on `bank`), score the choice on all of `bank`."""
    chosen = choose_policies({None: sibling}, budgets, seeds=seeds, across_budgets=True)
    row.sibling = [_accuracy(bank, chosen[b], b, seeds) for b in budgets]
    row.sibling_policy = chosen[budgets[0]].label


def _held_out(name: str, banks: dict[str, list[BankQuestion]], budgets: list[int], seeds: int) -> HeldOut:
    bank = banks[name]
    others = [questions for other, questions in banks.items() if other != name]
    pooled = [q for questions in others for q in questions]
    groups = [index for index, questions in enumerate(others) for _ in questions]
    chosen = choose_policies({None: pooled}, budgets, groups=groups, seeds=seeds, across_budgets=False)
    single = choose_policies({None: pooled}, budgets, groups=groups, seeds=seeds, across_budgets=True)
    own = tune({None: bank}, budgets, seeds=seeds, folds=2)
    k = min(len(q.samples) for q in bank)
    return HeldOut(
        lobo=[_accuracy(bank, chosen[b], b, seeds) for b in budgets],
        lobo_policies=[chosen[b].label for b in budgets],
        lobo_one=[_accuracy(bank, single[b], b, seeds) for b in budgets],
        lobo_one_policy=single[budgets[0]].label,
        fixed={p.label: [_accuracy(bank, p, b, seeds) for b in budgets] for p in FIXED},
        own=[r.held_out for r in own.budgets],
        own_policies=[r.chosen.label for r in own.budgets],
        defaults={n: [_accuracy(bank, p, b, seeds) for b in budgets] for n, p in DEFAULTS.items()},
        uniform=[_accuracy(bank, UNIFORM, b, seeds) for b in budgets],
        uniform_greedy=[_accuracy(bank, BASELINE, b, seeds) for b in budgets],
        oracle=[oracle_accuracy(bank, b * len(bank)) for b in budgets],
        greedy=statistics.fmean(bool(q.greedy and q.greedy.correct) for q in bank),
        vote16=_accuracy(bank, UNIFORM, k, seeds),
    )


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _print(name: str, row: HeldOut, budgets: list[int], questions: int) -> None:
    print(f"\nheld out: {name} ({questions} questions)   greedy {row.greedy:.1%}   vote@16 {row.vote16:.1%}")
    header = (
        "budget",
        "uniform",
        "u+greedy",
        *DEFAULTS,
        "lobo",
        "gap",
        "lobo1",
        "gap",
        "own",
        "gap",
        "sibling",
        "gap",
        "oracle",
    )
    print(" ".join(f"{h:>8}" for h in header) + "  lobo policy / own policy")
    lobo_gaps, own_gaps, one_gaps = row.gaps(row.lobo), row.gaps(row.own), row.gaps(row.lobo_one)
    sibling_gaps = row.gaps(row.sibling) if row.sibling is not None else [None] * len(budgets)
    for i, budget in enumerate(budgets):
        cells = [
            f"{budget}/q",
            f"{row.uniform[i]:.1%}",
            f"{row.uniform_greedy[i]:.1%}",
            *(f"{row.defaults[n][i]:.1%}" for n in DEFAULTS),
            f"{row.lobo[i]:.1%}",
            _percent(lobo_gaps[i]),
            f"{row.lobo_one[i]:.1%}",
            _percent(one_gaps[i]),
            f"{row.own[i]:.1%}",
            _percent(own_gaps[i]),
            "-" if row.sibling is None else f"{row.sibling[i]:.1%}",
            _percent(sibling_gaps[i]),
            f"{row.oracle[i]:.1%}",
        ]
        print(" ".join(f"{c:>8}" for c in cells) + f"  {row.lobo_policies[i]} / {row.own_policies[i]}")
    print(f"  lobo1 (one policy for every budget): {row.lobo_one_policy}")
    if row.sibling is not None:
        print(f"  sibling (chosen on the sibling bank, one policy for every budget): {row.sibling_policy}")
    for label, values in row.fixed.items():
        gains = [v - u for v, u in zip(values, row.uniform_greedy, strict=True)]
        print(
            f"  fixed {label:<34} "
            + " ".join(f"{v:6.1%}" for v in values)
            + "   vs u+greedy "
            + " ".join(f"{g:+6.1%}" for g in gains)
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--banks", type=Path, default=RESULTS / "banks")
    parser.add_argument("--budgets", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument(
        "--held-out", nargs="+", metavar="BANK", help="hold out only these banks (default: each in turn)"
    )
    parser.add_argument(
        "--siblings",
        type=Path,
        metavar="DIR",
        help="banks of the same families with other items (same file names): tune on each, score on its twin",
    )
    args = parser.parse_args()
    if args.siblings is not None and not args.siblings.is_dir():
        raise SystemExit(
            f"--siblings {args.siblings}: no such directory (record_banks.sh DIR SEED makes one)"
        )
    paths = sorted(p for p in args.banks.glob("*.jsonl") if not p.name.endswith(".partial.jsonl"))
    if len(paths) < 2:
        raise SystemExit(f"need at least two banks in {args.banks}: run bash benchmarks/record_banks.sh")
    banks = {path.stem: load_bank(path) for path in paths}
    started = time.perf_counter()
    rows = {}
    for name in args.held_out or list(banks):
        if name not in banks:
            raise SystemExit(f"--held-out {name!r}: no such bank in {args.banks} (have: {', '.join(banks)})")
        rows[name] = _held_out(name, banks, args.budgets, args.seeds)
        sibling = args.siblings / f"{name}.jsonl" if args.siblings is not None else None
        if sibling is not None and sibling.exists():
            _with_sibling(rows[name], banks[name], load_bank(sibling), args.budgets, args.seeds)
        elif sibling is not None:
            print(
                f"--siblings: no {sibling.name} in {args.siblings}; no sibling column for {name}",
                file=sys.stderr,
            )
        _print(name, rows[name], args.budgets, len(banks[name]))
    print(f"\n{len(banks)} banks, {time.perf_counter() - started:.0f} s")
    summary: dict[str, object] = {"banks": list(banks), "budgets": args.budgets}
    for key in (f.name for f in fields(HeldOut)):
        summary[key] = {name: getattr(row, key) for name, row in rows.items()}
    summary["lobo_gap_closed"] = {name: row.gaps(row.lobo) for name, row in rows.items()}
    summary["own_gap_closed"] = {name: row.gaps(row.own) for name, row in rows.items()}
    summary["lobo_one_gap_closed"] = {name: row.gaps(row.lobo_one) for name, row in rows.items()}
    summary["sibling_gap_closed"] = {
        name: row.gaps(row.sibling) for name, row in rows.items() if row.sibling is not None
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
