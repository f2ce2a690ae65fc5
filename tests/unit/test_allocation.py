"""Sample banks and allocators on synthetic banks (real banks come from `budgetflow bank record`)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from budgetflow.allocate import make_allocator, marginal_gain
from budgetflow.answers.voting import Evidence, Voting, final_answer
from budgetflow.cli import app
from budgetflow.errors import ConfigError, DatasetError
from budgetflow.evaluate.bank import BankQuestion, BankSample, load_bank, write_bank
from budgetflow.evaluate.simulate import oracle_accuracy, simulate


def _question(index: int, answers: list[str], gold: str, greedy: str | None = None) -> BankQuestion:
    samples = tuple(BankSample(answer=a, correct=a == gold, completion_tokens=10) for a in answers)
    greedy_sample = (
        None if greedy is None else BankSample(answer=greedy, correct=greedy == gold, completion_tokens=10)
    )
    return BankQuestion(id=f"q{index}", question="?", gold=gold, greedy=greedy_sample, samples=samples)


def synthetic_bank(size: int = 60, seed: int = 0) -> list[BankQuestion]:
    """Thirds: easy (always right), hopeless (always different and wrong), contested (45% right)."""
    rng = random.Random(seed)
    bank = []
    for index in range(size):
        kind = index % 3
        if kind == 0:
            answers = ["7"] * 16
        elif kind == 1:
            answers = [str(rng.randint(100, 999)) for _ in range(16)]
        else:
            answers = ["5" if rng.random() < 0.45 else str(rng.choice([1, 2, 3, 4])) for _ in range(16)]
        gold = {0: "7", 1: "0", 2: "5"}[kind]
        bank.append(_question(index, answers, gold, greedy=gold if kind != 1 else "1"))
    return bank


def test_bank_round_trips_and_bad_lines_are_named(tmp_path: Path) -> None:
    bank = synthetic_bank(6)
    path = tmp_path / "bank.jsonl"
    write_bank(path, bank)
    assert load_bank(path) == bank
    path.write_text(path.read_text() + '{"id": "x", "question": "q", "gold": "1", "samples": []}\n')
    with pytest.raises(DatasetError, match=r"bank.jsonl:7: 'samples' must be a non-empty list"):
        load_bank(path)
    path.write_text(
        '{"id": "x", "question": "q", "gold": "1", "samples": [{"answer": "1", "correct": true}]}\n'
    )
    with pytest.raises(DatasetError, match=r"bank.jsonl:1: samples\[0\]: no field 'completion_tokens'"):
        load_bank(path)


def test_final_answer_and_gain() -> None:
    evidence = Evidence(answers=["3", "4"], greedy="4", used_greedy=True)
    assert final_answer(evidence, Voting()) == "4"
    assert final_answer(Evidence(answers=["3", "4"]), Voting()) == "3"  # tie: first seen
    settled = marginal_gain(Evidence(answers=["7"] * 6), Voting())
    contested = marginal_gain(Evidence(answers=["5", "1", "5", "2"]), Voting())
    hopeless = marginal_gain(Evidence(answers=["101", "202", "303", "404", "505", "606"]), Voting())
    assert contested > settled and contested > hopeless


@pytest.mark.parametrize("budget", [2, 4, 8])
def test_allocators_never_exceed_the_budget_and_everyone_gets_an_answer(budget: int) -> None:
    bank = synthetic_bank()
    for name in ("uniform", "difficulty", "online", "early_stop"):
        for greedy in (False, True):
            result = simulate(
                bank, make_allocator(name, use_greedy=greedy), budget_samples=budget * len(bank), seeds=3
            )
            assert result.samples_per_question <= budget + 1e-9
    tight = simulate(bank, make_allocator("difficulty"), budget_tokens=10 * len(bank), seeds=2)
    assert tight.tokens <= 10 * len(bank)


def test_adaptive_allocation_beats_uniform_and_stays_under_the_oracle() -> None:
    bank = synthetic_bank()
    budget = 4 * len(bank)
    uniform = simulate(bank, make_allocator("uniform"), budget_samples=budget, seeds=10).accuracy
    adaptive = simulate(bank, make_allocator("difficulty"), budget_samples=budget, seeds=10).accuracy
    oracle = oracle_accuracy(bank, budget)
    assert uniform < adaptive <= oracle + 1e-9


def test_early_stop_spends_less_on_settled_questions() -> None:
    bank = synthetic_bank()
    vote16 = simulate(bank, make_allocator("uniform"), budget_samples=16 * len(bank), seeds=3)
    careful = simulate(
        bank,
        make_allocator("early_stop", stop_confidence=0.95, hopeless_after=6),
        budget_samples=16 * len(bank),
        seeds=3,
    )
    assert careful.tokens < 0.8 * vote16.tokens
    assert careful.accuracy >= vote16.accuracy - 0.05
    eager = simulate(bank, make_allocator("early_stop"), budget_samples=16 * len(bank), seeds=3)
    assert eager.tokens < careful.tokens


def test_simulate_needs_exactly_one_budget() -> None:
    with pytest.raises(ConfigError):
        simulate(synthetic_bank(3), make_allocator("uniform"), seeds=1)
    with pytest.raises(ConfigError, match="unknown allocator"):
        make_allocator("psychic")


def test_bank_simulate_cli_prints_json_last(tmp_path: Path) -> None:
    path = tmp_path / "bank.jsonl"
    write_bank(path, synthetic_bank(30))
    result = CliRunner().invoke(
        app,
        [
            "bank",
            "simulate",
            "--bank",
            str(path),
            "--allocator",
            "online",
            "--budget-samples",
            "120",
            "--seeds",
            "3",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(summary) == {"accuracy", "tokens", "oracle_accuracy", "uniform_accuracy"}
    assert summary["uniform_accuracy"] <= summary["oracle_accuracy"]
    missing = CliRunner().invoke(
        app, ["bank", "simulate", "--bank", str(tmp_path / "no.jsonl"), "--budget-samples", "1"]
    )
    assert missing.exit_code == 2 and "does not exist" in " ".join(missing.output.split())


def test_bank_record_cli_writes_a_loadable_bank(stub_url: str, tmp_path: Path) -> None:
    output = tmp_path / "bank.jsonl"
    result = CliRunner().invoke(
        app,
        ["bank", "record", "--output", str(output), "--dataset", "chain_sum", "--limit", "3", "--k", "4",
         "--backend", "openai", "--base-url", stub_url, "--model", "stub"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    bank = load_bank(output)
    assert len(bank) == 3 and all(len(q.samples) == 4 and q.greedy is not None for q in bank)
    assert all(s.answer == "7" for q in bank for s in q.samples)
    assert "greedy accuracy" in result.stdout


def test_compute_optimal_calibrates_on_one_split_and_applies_to_another(tmp_path: Path) -> None:
    from budgetflow.evaluate.calibrate import CalibrationTable, calibrate, probe_bin

    assert probe_bin(Evidence(answers=["4", "4"], greedy="4", used_greedy=True)) == 0
    assert probe_bin(Evidence(answers=["4", "5"], greedy="4", used_greedy=True)) == 1
    assert probe_bin(Evidence(answers=["3", "5"], greedy="4", used_greedy=True)) == 2
    bank = synthetic_bank(120)
    calibration, held_out = bank[::2], bank[1::2]
    table = calibrate(calibration, [4])
    easy, medium, _hard = table.plans[4]
    assert medium >= easy  # contested questions deserve more samples than settled ones
    path = tmp_path / "table.json"
    table.save(path)
    assert CalibrationTable.load(path) == table
    budget = 4 * len(held_out)
    tuned = simulate(
        held_out, make_allocator("compute_optimal", bin_targets=table.targets_for(4)), budget_samples=budget
    )
    uniform = simulate(held_out, make_allocator("uniform"), budget_samples=budget)
    assert tuned.samples_per_question <= 4 + 1e-9
    assert tuned.accuracy > uniform.accuracy
    with pytest.raises(ConfigError, match="calibration table"):
        make_allocator("compute_optimal")


def test_live_allocation_spends_the_sample_budget_where_answers_disagree() -> None:
    import asyncio

    from budgetflow.answers import MatchGrader
    from budgetflow.backends.scripted import FunctionBackend
    from budgetflow.evaluate.allocated import run_allocated
    from budgetflow.evaluate.datasets import Dataset
    from budgetflow.types import Message, Question, Request, SamplingParams

    def reply(request: Request, index: int) -> str:
        text = request.messages[0].text
        if text == "easy":
            return "Answer: 1"
        return f"Answer: {(request.sampling.seed or 0) % 3}"  # contested: answers vary by seed

    questions = tuple(
        Question(id=f"q{i}", text=t, gold="1", messages=(Message("user", t),))
        for i, t in enumerate(["easy", "contested", "easy", "contested"])
    )
    dataset = Dataset(name="live", questions=questions, grader=MatchGrader())
    backend = FunctionBackend(reply)
    report = asyncio.run(
        run_allocated(
            dataset, backend, make_allocator("difficulty"), budget_samples=20, sampling=SamplingParams(seed=1)
        )
    )
    samples = [r.samples for r in report.results]
    assert sum(samples) <= 20
    assert samples[1] > samples[0] and samples[3] > samples[2]  # the budget went where answers disagree
    assert report.results[0].answer == "1" and report.reserved_at_end.calls == 0
    starved = asyncio.run(
        run_allocated(
            dataset, backend, make_allocator("uniform"), budget_samples=2, sampling=SamplingParams()
        )
    )
    assert sum(r.samples for r in starved.results) == 2
    assert [r.budget_exhausted for r in starved.results].count(True) == 2  # starved questions still get a row


def test_eval_cli_runs_allocators(stub_url: str, tmp_path: Path) -> None:
    output = tmp_path / "out.json"
    result = CliRunner().invoke(
        app,
        ["eval", "--backend", "openai", "--base-url", stub_url, "--model", "stub", "--dataset", "chain_sum",
         "--limit", "4", "--allocator", "uniform", "--allocator", "online", "--budget-samples", "8",
         "--output", str(output)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    reports = json.loads(output.read_text())["reports"]
    assert [r["strategy"] for r in reports] == ["alloc:uniform@8", "alloc:online@8"]
    assert output.with_suffix(".md").read_text().count("alloc:") == 2
    for suffix in ("pareto", "time", "spend"):
        assert (tmp_path / f"out-{suffix}.png").stat().st_size > 1000
    assert all(sum(q["samples"] for q in r["results"]) <= 8 for r in reports)
    refused = CliRunner().invoke(app, ["eval", "--allocator", "online", "--output", str(output)])
    assert refused.exit_code == 2 and "--budget-samples" in refused.output


def test_quotas_cut_long_samples_after_the_probe() -> None:
    samples = tuple(BankSample(answer="4", correct=True, completion_tokens=t) for t in [5, 5] + [40] * 14)
    bank = [BankQuestion(id="q", question="?", gold="4", greedy=None, samples=samples)]
    allocator = make_allocator("difficulty", quota_factor=2.0)
    assert allocator.quota(Evidence(answers=["4"], longest=5)) is None  # still probing
    assert allocator.quota(Evidence(answers=["4", "4"], longest=5)) == 10
    # with an unshuffled pool the probe sees the two short samples; later long ones are cut at 10
    free = simulate(bank, make_allocator("difficulty"), budget_samples=6, seeds=1)
    capped = simulate(bank, allocator, budget_samples=6, seeds=1)
    assert capped.tokens <= free.tokens


def test_deadline_allocator_spends_time_where_it_pays() -> None:
    bank = []
    for index, question in enumerate(synthetic_bank(60)):
        slow = index % 2 == 1  # half the questions take ten times longer per sample
        samples = tuple(
            BankSample(
                answer=s.answer,
                correct=s.correct,
                completion_tokens=s.completion_tokens,
                seconds=1.0 if slow else 0.1,
            )
            for s in question.samples
        )
        bank.append(
            BankQuestion(id=question.id, question="?", gold=question.gold, greedy=None, samples=samples)
        )
    seconds = 60.0
    by_time = simulate(
        bank, make_allocator("deadline"), budget_samples=8 * 60, budget_seconds=seconds, seeds=5
    )
    by_gain = simulate(bank, make_allocator("online"), budget_samples=8 * 60, budget_seconds=seconds, seeds=5)
    assert by_time.accuracy >= by_gain.accuracy
    assert by_time.samples_per_question > by_gain.samples_per_question  # cheap questions got the time


def _confident_bank(size: int = 60, seed: int = 0) -> list[BankQuestion]:
    """Questions whose correct answer is a sure minority (mean logprob -0.05) against an unsure
    majority (-0.6); the greedy answer is the unsure wrong one on half of them."""
    rng = random.Random(seed)
    bank = []
    for index in range(size):
        samples = tuple(
            BankSample(answer="5", correct=True, completion_tokens=8, mean_logprob=-0.05)
            if rng.random() < 0.35
            else BankSample(answer="9", correct=False, completion_tokens=8, mean_logprob=-0.6)
            for _ in range(16)
        )
        wrong_greedy = index % 2 == 0
        greedy = BankSample(
            answer="9" if wrong_greedy else "5",
            correct=not wrong_greedy,
            completion_tokens=8,
            mean_logprob=-0.6 if wrong_greedy else -0.05,
        )
        bank.append(BankQuestion(id=f"c{index}", question="?", gold="5", greedy=greedy, samples=samples))
    return bank


def test_confidence_weighted_votes_let_a_sure_minority_win() -> None:
    evidence = Evidence()
    for answer, confidence in [("9", -0.6), ("9", -0.6), ("5", -0.05)]:
        evidence.add(answer, confidence)
    assert final_answer(evidence, Voting()) == "9"
    assert final_answer(evidence, Voting(confidence_weight=10.0)) == "5"
    votes = Voting(confidence_weight=10.0).votes(evidence)
    assert sum(votes.values()) == pytest.approx(3.0)  # rescaled: weights average one vote
    mixed = Evidence(answers=["9", "9", "5"], confidences=[-0.6, None, -0.05])
    assert final_answer(mixed, Voting(confidence_weight=10.0)) == "9"  # a vote without logprob: plain


def test_confidence_weighting_pays_in_simulation_and_the_oracle_bounds_it() -> None:
    bank = _confident_bank()
    budget = 4 * len(bank)
    plain = simulate(bank, make_allocator("online", use_greedy=True), budget_samples=budget, seeds=5)
    weighted_allocator = make_allocator("online", use_greedy=True, confidence_weight=10.0)
    weighted = simulate(bank, weighted_allocator, budget_samples=budget, seeds=5)
    assert weighted.accuracy > plain.accuracy + 0.2
    assert weighted.samples_per_question <= 4 + 1e-9
    majority_oracle = oracle_accuracy(bank, budget, trials=16)
    any_vote_oracle = oracle_accuracy(
        bank, budget, trials=16, votings=(Voting(), Voting(confidence_weight=10.0))
    )
    assert any_vote_oracle >= majority_oracle
    assert weighted.accuracy <= any_vote_oracle + 0.05  # seeds vs expectation: a small margin


def test_a_sure_greedy_answer_lowers_its_questions_priority() -> None:
    allocator = make_allocator("online", use_greedy=True, confidence_weight=10.0)
    sure = Evidence(answers=["4"], confidences=[-0.3], greedy="4", greedy_confidence=-0.01, used_greedy=True)
    unsure = Evidence(answers=["4"], confidences=[-0.3], greedy="4", greedy_confidence=-1.5, used_greedy=True)
    assert allocator.priority(unsure) > allocator.priority(sure) > 0
    plain = make_allocator("online", use_greedy=True)
    assert plain.priority(unsure) == plain.priority(sure)  # only with confidence weighting


def test_bank_mean_logprob_round_trips_and_is_checked(tmp_path: Path) -> None:
    bank = _confident_bank(4)
    path = tmp_path / "bank.jsonl"
    write_bank(path, bank)
    assert load_bank(path) == bank
    path.write_text(
        '{"id": "x", "question": "q", "gold": "1", "samples": '
        '[{"answer": "1", "correct": true, "completion_tokens": 3, "mean_logprob": "high"}]}\n'
    )
    with pytest.raises(DatasetError, match=r"bank.jsonl:1: samples\[0\]: mean_logprob must be a number"):
        load_bank(path)


def test_bank_simulate_cli_weighs_votes_by_confidence(tmp_path: Path) -> None:
    path = tmp_path / "bank.jsonl"
    write_bank(path, _confident_bank(40))

    def run(*extra: str) -> dict[str, float]:
        result = CliRunner().invoke(
            app,
            ["bank", "simulate", "--bank", str(path), "--allocator", "online", "--greedy",
             "--budget-samples", "160", "--seeds", "3", *extra],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        summary: dict[str, float] = json.loads(result.stdout.strip().splitlines()[-1])
        return summary

    plain, weighted = run(), run("--confidence-weight", "10", "--greedy-weight", "2")
    assert "oracle_any_vote_accuracy" not in plain
    assert weighted["accuracy"] > plain["accuracy"]
    assert weighted["oracle_any_vote_accuracy"] >= weighted["oracle_accuracy"]
