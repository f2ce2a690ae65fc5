"""`budgetflow eval` end to end on the embedded model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from budgetflow.cli import app

pytestmark = pytest.mark.integration


def test_eval_on_the_embedded_model(tmp_path: Path) -> None:
    output = tmp_path / "eval.json"
    result = CliRunner().invoke(
        app,
        ["eval", "--dataset", "chain_sum", "--limit", "3", "-s", "single", "-s", "vote@2",
         "--threads", "1", "--output", str(output)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    document = json.loads(output.read_text())
    single, vote = document["reports"]
    assert single["strategy"] == "single" and vote["strategy"] == "vote@2"
    assert single["questions"] == vote["questions"] == 3
    assert all(r["samples"] == 1 for r in single["results"])
    assert all(r["samples"] == 2 for r in vote["results"])
    assert vote["completion_tokens"] > single["completion_tokens"] > 0
    assert 0.0 <= single["accuracy"] <= 1.0
    assert "chain_sum, 3 questions" in result.stdout


def test_bank_record_score_and_simulate_with_the_verifier_on_the_embedded_model(tmp_path: Path) -> None:
    from budgetflow.evaluate.bank import load_bank

    bank, scored = tmp_path / "bank.jsonl", tmp_path / "scored.jsonl"
    recorded = CliRunner().invoke(
        app,
        ["bank", "record", "--dataset", "chain_sum", "--limit", "4", "--k", "3", "--threads", "1",
         "--output", str(bank)],
    )  # fmt: skip
    assert recorded.exit_code == 0, recorded.output
    result = CliRunner().invoke(
        app, ["bank", "score", "--bank", str(bank), "--dataset", "chain_sum", "--output", str(scored)]
    )
    assert result.exit_code == 0, result.output
    before, after = load_bank(bank), load_bank(scored)
    verified_while_recording = tmp_path / "recorded-scored.jsonl"
    recorded = CliRunner().invoke(
        app,
        ["bank", "record", "--dataset", "chain_sum", "--limit", "4", "--k", "3", "--threads", "1",
         "--verify", "--output", str(verified_while_recording)],
    )  # fmt: skip
    assert recorded.exit_code == 0, recorded.output
    for later, at_once in zip(after, load_bank(verified_while_recording), strict=True):
        assert [s.answer for s in later.samples] == [s.answer for s in at_once.samples]  # same seed
        assert [s.verifier_score for s in later.samples] == pytest.approx(
            [s.verifier_score for s in at_once.samples], abs=1e-3
        )  # a warm prompt scores as a cold one
    assert [q.id for q in before] == [q.id for q in after]
    for plain, verified in zip(before, after, strict=True):
        assert [s.answer for s in plain.samples] == [s.answer for s in verified.samples]
        for sample in verified.samples:
            assert sample.answer is None or (sample.verifier_score is not None and sample.verifier_score < 0)
        by_answer: dict[str, set[float | None]] = {}
        for sample in verified.samples:
            if sample.answer is not None:
                by_answer.setdefault(sample.answer, set()).add(sample.verifier_score)
        assert all(len(scores) == 1 for scores in by_answer.values())  # one score per answer
    simulated = CliRunner().invoke(
        app,
        ["bank", "simulate", "--bank", str(scored), "--allocator", "online", "--greedy",
         "--verifier-weight", "3", "--budget-samples", "8", "--seeds", "2"],
    )  # fmt: skip
    assert simulated.exit_code == 0, simulated.output
    summary = json.loads(simulated.stdout.strip().splitlines()[-1])
    assert 0.0 <= summary["accuracy"] <= summary["oracle_any_vote_accuracy"] + 0.25
    wrong_dataset = CliRunner().invoke(
        app, ["bank", "score", "--bank", str(bank), "--dataset", "basic_arithmetic", "--output", str(scored)]
    )
    assert wrong_dataset.exit_code != 0 and "not in dataset 'basic_arithmetic'" in wrong_dataset.output
