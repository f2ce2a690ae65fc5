"""Choosing a policy on a calibration bank (`budgetflow bank tune`) and applying it (`eval --policy`)."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from budgetflow.allocate.policy import Policy, PolicyTable
from budgetflow.answers.voting import Evidence, final_answer
from budgetflow.cli import app
from budgetflow.cli_tune import bank_variants
from budgetflow.errors import ConfigError
from budgetflow.evaluate.bank import BankQuestion, BankSample, load_bank, write_bank
from budgetflow.evaluate.tune import BASELINE, candidate_policies, choose, tune

runner = CliRunner()


def _question(index: int, right: float, rng: random.Random, temperature: float | None = None) -> BankQuestion:
    """A question whose samples are right with probability `right`; wrong ones scatter."""

    def sample() -> BankSample:
        correct = rng.random() < right
        answer = "42" if correct else str(rng.choice([7, 8, 9]))
        return BankSample(answer=answer, correct=correct, completion_tokens=5, mean_logprob=-0.5)

    return BankQuestion(
        id=f"q{index}",
        question=f"question {index}",
        gold="42",
        greedy=sample(),
        samples=tuple(sample() for _ in range(8)),
        temperature=temperature,
    )


def _bank(size: int = 40, seed: int = 0, temperature: float | None = None) -> list[BankQuestion]:
    rng = random.Random(seed)
    return [_question(i, [1.0, 0.6, 0.3][i % 3], rng, temperature) for i in range(size)]


def test_a_lead_within_noise_keeps_the_baseline_and_a_clear_one_wins() -> None:
    other = Policy(allocator="online", use_greedy=True)
    baseline = np.array([1.0, 0.0] * 20)
    noisy = baseline.copy()
    noisy[[1, 3]], noisy[0] = 1.0, 0.0  # two better, one worse of 40: a lead within one standard error
    assert choose({BASELINE: baseline, other: noisy}) == BASELINE
    clear = np.ones(40)
    assert choose({BASELINE: baseline, other: clear}) == other


def test_a_policy_that_loses_clearly_on_one_source_bank_is_not_chosen() -> None:
    """It wins on the pool (+0.5 on bank 0, -0.25 on bank 1), but bank 1 says it misleads there."""
    other = Policy(allocator="online", use_greedy=True, verifier_weight=3.0)
    baseline = np.array([0.0] * 40 + [1.0] * 40)
    misleading = np.array([1.0] * 20 + [0.0] * 20 + [0.0] * 10 + [1.0] * 30)
    groups = [0] * 40 + [1] * 40
    assert float(np.mean(misleading)) > float(np.mean(baseline))
    assert choose({BASELINE: baseline, other: misleading}) == other  # pooled, it would win
    assert choose({BASELINE: baseline, other: misleading}, groups) == BASELINE


def test_tune_chooses_per_budget_and_reports_held_out_figures() -> None:
    result = tune({None: _bank()}, [2, 4], seeds=3)
    assert [r.budget for r in result.budgets] == [2, 4]
    assert result.candidates == len(candidate_policies(_bank()))
    for report in result.budgets:
        assert report.in_sample >= report.baseline_in_sample  # never below the baseline in-sample
        assert 0.0 <= report.held_out <= 1.0 and len(report.held_out_choices) == 2
    table = result.table(source="synthetic")
    assert set(table.plans) == {2, 4} and table.calibration["questions"] == 40
    assert len({r.chosen for r in result.budgets}) == 1  # by default one policy serves every budget
    per_budget = tune({None: _bank()}, [2, 4], seeds=3, across_budgets=False)
    assert all(r.in_sample >= r.baseline_in_sample for r in per_budget.budgets)


def test_candidates_use_only_what_the_bank_carries() -> None:
    plain = [
        BankQuestion(
            id="a", question="a", gold="1", greedy=None,
            samples=(BankSample(answer="1", correct=True, completion_tokens=1),),
        )
    ]  # fmt: skip
    policies = candidate_policies(plain)
    assert all(p.confidence_weight is None and p.verifier_weight is None for p in policies)
    assert any(p.confidence_weight is not None for p in candidate_policies(_bank()))
    assert BASELINE in policies and any(p.allocator == "early_stop" for p in policies)


def test_candidates_weigh_the_greedy_answer_one_or_four_samples() -> None:
    verified = [
        replace(q, samples=tuple(replace(s, verifier_score=-1.0) for s in q.samples)) for q in _bank(6)
    ]
    policies = candidate_policies(verified)
    assert {p.greedy_weight for p in policies if p.use_greedy} == {1.0, 4.0}
    assert not any(p.confidence_weight is not None and p.verifier_weight is not None for p in policies)
    assert any(p.verifier_weight is not None for p in policies)
    assert not any(p.verifier_weight is not None for p in candidate_policies(_bank(6)))  # no scores
    assert Policy(use_greedy=True, greedy_weight=4.0).label == "uniform+greedy(4)"


def test_a_heavier_greedy_vote_holds_against_a_few_disagreeing_samples() -> None:
    evidence = Evidence()
    for answer in ("7", "7", "7"):
        evidence.add(answer)
    evidence.set_greedy("42")
    assert final_answer(evidence, Policy(greedy_weight=1.0).build().voting) == "7"
    assert final_answer(evidence, Policy(greedy_weight=4.0).build().voting) == "42"


def test_banks_at_several_temperatures_make_the_temperature_a_choice() -> None:
    variants, _ = bank_variants([_bank(temperature=0.5), _bank(seed=1, temperature=1.0)])
    assert set(variants) == {0.5, 1.0}
    result = tune(variants, [2], seeds=2)
    assert result.budgets[0].chosen.temperature in (0.5, 1.0)
    pooled, groups = bank_variants([_bank(6), [replace_id(q, "x") for q in _bank(6)]])
    assert set(pooled) == {None} and len(pooled[None]) == 12 and groups == [0] * 6 + [1] * 6
    with pytest.raises(ConfigError, match="different temperature"):
        bank_variants([_bank(temperature=0.5), _bank(temperature=0.5)])


def replace_id(question: BankQuestion, prefix: str) -> BankQuestion:
    return BankQuestion(
        id=prefix + question.id,
        question=question.question,
        gold=question.gold,
        greedy=question.greedy,
        samples=question.samples,
    )


def test_a_policy_file_round_trips_and_bad_ones_name_the_problem(tmp_path: Path) -> None:
    path = tmp_path / "policy.json"
    table = PolicyTable(
        plans={
            2: BASELINE,
            8: Policy(allocator="online", use_greedy=True, greedy_weight=4.0, verifier_weight=3.0),
        }
    )
    table.save(path)
    loaded = PolicyTable.load(path)
    assert loaded.plans == table.plans
    assert loaded.for_budget(4) == BASELINE and loaded.for_budget(9).allocator == "online"
    assert loaded.for_budget(1) == BASELINE  # below every plan: the smallest
    document = json.loads(path.read_text())
    document["plans"]["2"]["allocater"] = "online"
    path.write_text(json.dumps(document))
    with pytest.raises(ConfigError, match=r"policy\.json.*plans\.2.*unknown policy field\(s\) allocater"):
        PolicyTable.load(path)
    document["plans"]["2"] = {"allocator": "psychic"}
    path.write_text(json.dumps(document))
    with pytest.raises(ConfigError, match="unknown allocator 'psychic'"):
        PolicyTable.load(path)
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="not JSON"):
        PolicyTable.load(path)


def test_bank_tune_then_eval_with_the_policy(stub_url: str, tmp_path: Path) -> None:
    bank_path, policy_path = tmp_path / "bank.jsonl", tmp_path / "policy.json"
    write_bank(bank_path, _bank())
    assert load_bank(bank_path)[0].temperature is None
    tuned = runner.invoke(
        app,
        [
            "bank",
            "tune",
            "--bank",
            str(bank_path),
            "--output",
            str(policy_path),
            "--budget",
            "2",
            "--seeds",
            "2",
        ],
    )
    assert tuned.exit_code == 0, tuned.output
    assert "held-out" in tuned.output and policy_path.is_file()
    data = tmp_path / "qs.jsonl"
    data.write_text('{"question": "3 + 4", "answer": 7}\n{"question": "2 + 5", "answer": 7}\n')
    result = runner.invoke(
        app,
        ["eval", "--backend", "openai", "--base-url", stub_url, "--model", "stub", "--dataset", str(data),
         "--policy", str(policy_path), "--budget-samples", "4", "--output", str(tmp_path / "out.json")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    reports = json.loads((tmp_path / "out.json").read_text())["reports"]
    assert [r["strategy"].split("@")[0].startswith("policy:") for r in reports] == [True]
    assert reports[0]["accuracy"] == 1.0  # the stub always answers 7


def test_allocators_default_to_greedy_evidence_and_confidence_votes_where_logprobs_are_sure() -> None:
    from budgetflow.cli_eval_options import confidence_weight_for as _confidence_weight
    from budgetflow.cli_options import CONFIDENCE_WEIGHT_DEFAULT, GREEDY_EVIDENCE_DEFAULT

    assert GREEDY_EVIDENCE_DEFAULT is True
    assert _confidence_weight(None, "embedded") == CONFIDENCE_WEIGHT_DEFAULT
    assert _confidence_weight(None, "openai") is None  # not every server returns logprobs
    assert _confidence_weight(0.0, "embedded") is None and _confidence_weight(20.0, "openai") == 20.0


def test_eval_greedy_weight_reaches_the_allocators_votes() -> None:
    from budgetflow.cli_eval_options import AllocationOptions

    chosen = AllocationOptions(allocator=["uniform", "online"], greedy_weight=4.0).allocators("embedded")
    assert [a.voting.greedy_weight for a in chosen] == [4.0, 4.0]
    assert AllocationOptions(allocator=["online"]).allocators("openai")[0].voting.greedy_weight == 1.0
    refused = runner.invoke(app, ["eval", "--allocator", "uniform", "--greedy-weight", "0"])
    assert refused.exit_code == 2 and "--greedy-weight" in refused.output
