"""benchmarks/policies.py --siblings: the policy is chosen on the sibling bank alone and scored on
the held-out bank."""

from __future__ import annotations

from pathlib import Path

from budgetflow.evaluate.bank import BankQuestion, BankSample
from budgetflow.evaluate.tune import BASELINE
from budgetflow.testing.scripts import load_script

ROOT = Path(__file__).resolve().parents[2]


def _bank(greedy_right: bool, samples_right: int, size: int = 24) -> list[BankQuestion]:
    """`size` questions whose greedy answer is right or wrong, and whose first `samples_right` of
    eight samples are right (the wrong ones split between two answers)."""

    def sample(correct: bool, index: int) -> BankSample:
        answer = "42" if correct else ("7" if index % 2 else "8")
        return BankSample(answer=answer, correct=correct, completion_tokens=5, mean_logprob=-0.5)

    return [
        BankQuestion(
            id=f"q{i}",
            question=f"question {i}",
            gold="42",
            greedy=BankSample(
                answer="42" if greedy_right else "9", correct=greedy_right, completion_tokens=5
            ),
            samples=tuple(sample(j < samples_right, j) for j in range(8)),
        )
        for i in range(size)
    ]


def test_the_sibling_policy_is_chosen_on_the_sibling_and_scored_on_the_held_out_bank() -> None:
    bench = load_script(ROOT / "benchmarks" / "policies.py")
    held_out = _bank(greedy_right=True, samples_right=2)  # the greedy answer is what to trust
    sibling = _bank(greedy_right=False, samples_right=5)  # the samples are, the greedy one misleads
    budgets = [2, 4]
    chosen_on_sibling = bench.choose_policies({None: sibling}, budgets, seeds=2)[budgets[0]]
    chosen_here = bench.choose_policies({None: held_out}, budgets, seeds=2)[budgets[0]]
    assert chosen_on_sibling != chosen_here  # the two banks want different policies
    assert chosen_here.use_greedy and chosen_here.greedy_weight > 1  # trust the greedy answer

    row = bench.HeldOut(**{name: None for name in bench.HeldOut.__dataclass_fields__})
    bench._with_sibling(row, held_out, sibling, budgets, 2)
    assert row.sibling_policy == chosen_on_sibling.label
    assert row.sibling == [bench._accuracy(held_out, chosen_on_sibling, b, 2) for b in budgets]
    baseline = [bench._accuracy(held_out, BASELINE, b, 2) for b in budgets]
    assert row.sibling[0] < baseline[0]  # a misleading sibling costs the held-out bank
