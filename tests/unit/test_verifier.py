"""The likelihood verifier: scoring a bank's answers, verifier-weighted votes, and their replay."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from typer.testing import CliRunner

from budgetflow.allocate import make_allocator
from budgetflow.answers.grading import MatchGrader
from budgetflow.answers.voting import Evidence, Voting, final_answer
from budgetflow.backends.base import Backend
from budgetflow.backends.scripted import FunctionBackend
from budgetflow.cli import app
from budgetflow.errors import ConfigError, DatasetError
from budgetflow.evaluate.bank import BankQuestion, BankSample, load_bank, score_bank, write_bank
from budgetflow.evaluate.datasets import ARITHMETIC_STATEMENT, Dataset
from budgetflow.evaluate.simulate import oracle_accuracy, simulate
from budgetflow.strategies.verifiers import likelihood_scores
from budgetflow.types import Message, Question, Request, Response


class _ListeningScorer(Backend):
    """Scores a text by a table of answers ('-12' likely, anything else unlikely) and keeps what it
    was asked, so tests can check the prompts and statements the verifier builds."""

    name = "listening-scorer"

    def __init__(self) -> None:
        self.asked: list[tuple[Request, list[str]]] = []

    async def complete(self, request: Request) -> Response:
        raise AssertionError("a verifier samples nothing")

    async def score_continuations(self, request: Request, continuations: Sequence[str]) -> list[float]:
        self.asked.append((request, list(continuations)))
        return [-0.5 if " -12." in text else -6.0 for text in continuations]


class _ScoringFunctionBackend(FunctionBackend):
    """Replies with `reply` and scores like `_ListeningScorer`, keeping the texts it scored."""

    def __init__(self, reply: Callable[[Request, int], str]) -> None:
        super().__init__(reply)
        self.scored: list[str] = []

    async def score_continuations(self, request: Request, continuations: Sequence[str]) -> list[float]:
        self.scored += continuations
        return [-0.5 if " -12." in text else -6.0 for text in continuations]

    async def count_tokens(self, text: str) -> int:
        return len(text)  # a character per token: easy to check


def _dataset() -> Dataset:
    question = Question(
        id="q0", text="0 - 4 - 8", gold="-12", messages=(Message("user", "Q: 0 - 4 - 8\nA:"),)
    )
    return Dataset(name="tiny", questions=(question,), grader=MatchGrader(), statement=ARITHMETIC_STATEMENT)


def _sample(answer: str | None, gold: str = "-12") -> BankSample:
    return BankSample(answer=answer, correct=answer == gold, completion_tokens=9)


def test_the_verifier_states_each_distinct_answer_once_after_the_question() -> None:
    dataset, scorer = _dataset(), _ListeningScorer()
    scores = asyncio.run(
        likelihood_scores(scorer, dataset.statement, dataset.questions[0], ["19", "-12", "19.0", "19"])
    )
    assert scores == {"-12": -0.5, "19": -6.0}  # "19.0" and "19" are one answer
    ((request, texts),) = scorer.asked
    assert request.prefill == "0 - 4 - 8 =" and request.messages == dataset.questions[0].messages
    assert sorted(texts) == [" -12.", " 19."]


def test_score_bank_sets_every_answers_score_and_names_a_foreign_question() -> None:
    entry = BankQuestion(
        id="q0",
        question="0 - 4 - 8",
        gold="-12",
        greedy=_sample("19"),
        samples=(_sample("19"), _sample("-12"), _sample(None)),
    )
    (scored,) = asyncio.run(score_bank([entry], _dataset(), _ListeningScorer()))
    assert scored.greedy is not None and scored.greedy.verifier_score == -6.0
    assert [s.verifier_score for s in scored.samples] == [-6.0, -0.5, None]
    assert [s.answer for s in scored.samples] == ["19", "-12", None]  # nothing else changed
    stranger = BankQuestion(id="elsewhere", question="?", gold="1", greedy=None, samples=(_sample("1"),))
    with pytest.raises(DatasetError, match=r"not in dataset 'tiny' \(first: 'elsewhere'\)"):
        asyncio.run(score_bank([stranger], _dataset(), _ListeningScorer()))


def test_a_backend_without_scoring_says_so() -> None:
    class Plain(Backend):
        async def complete(self, request: Request) -> Response:
            raise AssertionError

    with pytest.raises(NotImplementedError, match="Plain does not score text"):
        asyncio.run(Plain().score_continuations(Request.from_prompt("hi"), ["x"]))


def test_verifier_weighted_votes_let_a_likely_minority_win() -> None:
    evidence = Evidence()
    evidence.add("19", score=-6.0)
    evidence.add("19", score=-6.0)
    evidence.add("-12", score=-0.5)
    assert final_answer(evidence, Voting()) == "19"
    assert final_answer(evidence, Voting(verifier_weight=1.0)) == "-12"
    votes = Voting(verifier_weight=1.0).votes(evidence)
    assert sum(votes.values()) == pytest.approx(3.0)  # rescaled: weights average one vote
    assert final_answer(evidence, Voting(verifier_weight=0.1)) == "19"  # a light weight: votes still count
    unscored = Evidence()
    for answer, score in [("19", -6.0), ("19", -6.0), ("-12", None)]:
        unscored.add(answer, score=score)
    assert final_answer(unscored, Voting(verifier_weight=1.0)) == "19"  # an answer without a score: plain


def test_huge_scores_do_not_overflow() -> None:
    evidence = Evidence()
    evidence.add("1", score=-900.0)
    evidence.add("2", score=-1000.0)
    votes = Voting(verifier_weight=1.0).votes(evidence)
    assert votes["1"] == pytest.approx(2.0) and votes["2"] == pytest.approx(0.0)


def _copied_answer_bank(size: int = 60, seed: int = 0) -> list[BankQuestion]:
    """A wrong answer copied from an example ("19", unlikely as a statement) outvotes the right one
    (likely) on every question; greedy says "19" on half."""
    rng = random.Random(seed)
    bank = []
    for index in range(size):
        samples = tuple(
            BankSample(answer="-12", correct=True, completion_tokens=8, verifier_score=-1.0)
            if rng.random() < 0.3
            else BankSample(answer="19", correct=False, completion_tokens=8, verifier_score=-5.0)
            for _ in range(16)
        )
        wrong = index % 2 == 0
        greedy = BankSample(
            answer="19" if wrong else "-12",
            correct=not wrong,
            completion_tokens=8,
            verifier_score=-5.0 if wrong else -1.0,
        )
        bank.append(BankQuestion(id=f"v{index}", question="?", gold="-12", greedy=greedy, samples=samples))
    return bank


def test_verifier_weighting_pays_in_simulation_and_the_oracle_bounds_it() -> None:
    bank = _copied_answer_bank()
    budget = 4 * len(bank)
    plain = simulate(bank, make_allocator("online", use_greedy=True), budget_samples=budget, seeds=5)
    verified_allocator = make_allocator("online", use_greedy=True, verifier_weight=1.0)
    verified = simulate(bank, verified_allocator, budget_samples=budget, seeds=5)
    assert verified.accuracy > plain.accuracy + 0.3
    assert verified.samples_per_question <= 4 + 1e-9
    any_vote = oracle_accuracy(bank, budget, trials=16, votings=(Voting(), Voting(verifier_weight=1.0)))
    assert verified.accuracy <= any_vote + 0.05  # seeds vs expectation: a small margin


def test_bank_verifier_score_round_trips_and_is_checked(tmp_path: Path) -> None:
    bank = _copied_answer_bank(4)
    path = tmp_path / "bank.jsonl"
    write_bank(path, bank)
    assert load_bank(path) == bank
    path.write_text(
        '{"id": "x", "question": "q", "gold": "1", "samples": '
        '[{"answer": "1", "correct": true, "completion_tokens": 3, "verifier_score": [1]}]}\n'
    )
    with pytest.raises(DatasetError, match=r"bank.jsonl:1: samples\[0\]: verifier_score must be a number"):
        load_bank(path)


def test_bank_simulate_cli_weighs_votes_by_the_verifier(tmp_path: Path) -> None:
    path = tmp_path / "bank.jsonl"
    write_bank(path, _copied_answer_bank(40))

    def run(*extra: str) -> dict[str, float]:
        result = CliRunner().invoke(
            app,
            ["bank", "simulate", "--bank", str(path), "--allocator", "uniform", "--greedy",
             "--budget-samples", "120", "--seeds", "3", *extra],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        summary: dict[str, float] = json.loads(result.stdout.strip().splitlines()[-1])
        return summary

    plain, verified = run(), run("--verifier-weight", "1")
    assert verified["accuracy"] > plain["accuracy"] + 0.3
    assert verified["oracle_any_vote_accuracy"] >= verified["oracle_accuracy"]


def test_with_a_verifier_agreement_on_a_doubted_answer_still_attracts_budget() -> None:
    allocator = make_allocator("online", use_greedy=True, verifier_weight=1.0)
    copied, sure = Evidence(), Evidence()
    for _ in range(3):
        copied.add("19", score=-5.0)  # three samples agree on an answer the model would rarely state
        sure.add("7", score=-0.05)
    assert allocator.verifier_doubt(copied) == pytest.approx(1 - 2.718281828**-5.0)
    assert allocator.priority(copied) > 10 * allocator.priority(sure) > 0
    plain = make_allocator("online", use_greedy=True)
    assert plain.verifier_doubt(copied) is None
    assert plain.priority(copied) == plain.priority(sure)  # plain majority: agreement is agreement
    fewer = Evidence()
    fewer.add("19", score=-5.0)
    assert allocator.priority(fewer) > allocator.priority(copied)  # samples drawn lower the priority


def test_live_allocation_asks_the_verifier_once_per_new_answer_and_its_vote_wins() -> None:
    from budgetflow.evaluate.allocated import run_allocated
    from budgetflow.types import SamplingParams

    def reply(request: Request, index: int) -> str:  # "19" twice as often as the right "-12"
        return "Answer: -12" if (request.sampling.seed or 0) % 3 == 0 else "Answer: 19"

    dataset = _dataset()
    backend = _ScoringFunctionBackend(reply)
    allocator = make_allocator("online", use_greedy=True, verifier_weight=1.0)
    report = asyncio.run(
        run_allocated(dataset, backend, allocator, budget_samples=9, sampling=SamplingParams(seed=1))
    )
    (result,) = report.results
    assert result.samples <= 9 and result.answer == "-12" and result.score == 1.0
    assert sorted(backend.scored) == [" -12.", " 19."]  # each answer scored once, however often drawn
    plain_allocator = make_allocator("online", use_greedy=True)
    plain = asyncio.run(
        run_allocated(
            dataset,
            _ScoringFunctionBackend(reply),
            plain_allocator,
            budget_samples=9,
            sampling=SamplingParams(seed=1),
        )
    )
    assert plain.results[0].answer == "19"
    with pytest.raises(ConfigError, match="needs a backend that scores text"):
        asyncio.run(
            run_allocated(
                dataset, FunctionBackend(reply), allocator, budget_samples=3, sampling=SamplingParams()
            )
        )


def test_the_deadline_planner_weighs_votes_and_plans_by_the_verifier() -> None:
    from dataclasses import replace

    from budgetflow.allocate.deadline import expected_gain
    from budgetflow.evaluate.simulate_lanes import Lane, simulate_lanes

    bank = [
        replace(q, samples=tuple(replace(s, seconds=0.05) for s in q.samples))
        for q in _copied_answer_bank(30)
    ]
    lane = Lane(name="embedded", bank=bank, request_seconds=0.0)
    plain = make_allocator("deadline", use_greedy=True)
    verified = make_allocator("deadline", use_greedy=True, verifier_weight=1.0)
    runs = [
        simulate_lanes([lane], a, budget_samples=120, budget_seconds=4.0, seeds=3) for a in (plain, verified)
    ]
    assert runs[1].accuracy > runs[0].accuracy + 0.3
    assert runs[1].seconds <= 4.0 and runs[1].samples_per_question <= 4 + 1e-9
    doubted, sure = Evidence(), Evidence()
    doubted.add("19", score=-5.0)
    sure.add("7", score=-0.05)
    assert (
        expected_gain(doubted, verified, 2)
        > expected_gain(doubted, verified, 1)
        > 10 * expected_gain(sure, verified, 1)
    )


def test_the_live_deadline_planner_verifies_every_lanes_answers_on_the_first_backend() -> None:
    from budgetflow.evaluate.allocated_lanes import run_planned
    from budgetflow.types import SamplingParams

    verifier = _ScoringFunctionBackend(lambda request, index: "Answer: 19")
    other_lane = FunctionBackend(lambda request, index: "Answer: -12")  # cannot score: lane 2 only
    report = asyncio.run(
        run_planned(_dataset(), [verifier, other_lane], make_allocator("deadline", verifier_weight=1.0),
                    budget_samples=6, deadline_seconds=5.0, sampling=SamplingParams(seed=1))
    )  # fmt: skip
    (result,) = report.results
    assert {"19", "-12"} <= set(result.sample_answers)  # both lanes drew
    assert sorted(verifier.scored) == [" -12.", " 19."]  # the second lane's answer scored on the first
    assert result.answer == "-12" and result.samples <= 6


def test_compute_optimal_calibrates_for_the_verifiers_vote_and_the_table_keeps_it(tmp_path: Path) -> None:
    from budgetflow.evaluate.calibrate import CalibrationTable, calibrate

    calibration, held_out = _copied_answer_bank(40, seed=1), _copied_answer_bank(40, seed=2)
    table = calibrate(calibration, [4], voting=Voting(verifier_weight=1.0))
    path = tmp_path / "table.json"
    table.save(path)
    assert CalibrationTable.load(path) == table and table.voting.verifier_weight == 1.0
    path.write_text('{"bins": 3, "plans": {"4": [2, 3, 4]}}')  # written before votes were weighted
    assert CalibrationTable.load(path).voting == Voting()
    path.write_text('{"bins": 3, "plans": {"4": [2, 3, 4]}, "voting": {"verifier_weight": "high"}}')
    with pytest.raises(ConfigError, match="not a calibration table"):
        CalibrationTable.load(path)

    bank_path, table_path = tmp_path / "bank.jsonl", tmp_path / "verified.json"
    write_bank(bank_path, held_out)
    write_bank(tmp_path / "calibration.jsonl", calibration)

    def simulate_with(*calibrate_flags: str) -> float:
        calibrated = CliRunner().invoke(
            app,
            ["bank", "calibrate", "--bank", str(tmp_path / "calibration.jsonl"), "--output", str(table_path),
             "--budget", "4", *calibrate_flags],
        )  # fmt: skip
        assert calibrated.exit_code == 0, calibrated.output
        result = CliRunner().invoke(
            app,
            ["bank", "simulate", "--bank", str(bank_path), "--allocator", "compute_optimal",
             "--table", str(table_path), "--budget-samples", "160", "--seeds", "3"],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        accuracy: float = json.loads(result.stdout.strip().splitlines()[-1])["accuracy"]
        return accuracy

    assert simulate_with("--verifier-weight", "1") > simulate_with() + 0.3  # the table's vote is used


def test_live_verification_is_reserved_metered_and_settled_in_the_questions_ledger() -> None:
    from budgetflow.evaluate.allocated import Books, open_units, verify_new_answers
    from budgetflow.events import BudgetSettled, EventLog, RequestFinished
    from budgetflow.runtime.context import RunContext

    backend, books, dataset = _ScoringFunctionBackend(lambda request, index: ""), Books(1, 0), _dataset()
    context = RunContext(backend)
    log = EventLog(context.events)
    open_units(context, dataset, books)
    evidence = books.evidence[0]
    evidence.add("19")
    evidence.add("-12")
    evidence.set_greedy("19")
    assert asyncio.run(verify_new_answers(dataset, books, 0)) == 2
    assert evidence.scores == {"-12": -0.5, "19": -6.0}
    unit = books.units[0]
    assert unit is not None
    statements = len(" -12.") + len(" 19.")  # the fake counts a character per token
    assert unit.usage.prompt_tokens >= statements and context.ledger.spent == unit.spent  # in the ledger
    assert [e.kind for e in log.of_type(RequestFinished)] == ["score"]  # metered  # type: ignore[attr-defined]
    assert len(log.of_type(BudgetSettled)) == 1
    evidence.add("-12")
    assert asyncio.run(verify_new_answers(dataset, books, 0)) == 0  # nothing new to score
    assert backend.scored == [" -12.", " 19."]


def test_live_verification_the_budget_refuses_starves_the_question_instead_of_failing() -> None:
    from budgetflow.budget import Budget
    from budgetflow.evaluate.allocated import Books, open_units, verify_new_answers
    from budgetflow.runtime.context import RunContext

    backend, books, dataset = _ScoringFunctionBackend(lambda request, index: ""), Books(1, 0), _dataset()
    open_units(RunContext(backend, budget=Budget(total_tokens=3)), dataset, books)
    books.evidence[0].add("19")
    assert asyncio.run(verify_new_answers(dataset, books, 0)) == 0
    assert backend.scored == [] and books.refused == {0} and books.evidence[0].scores == {}


def test_early_stop_on_verifier_weighted_counts_settles_on_the_likely_answer() -> None:
    from dataclasses import replace

    bank = _copied_answer_bank(30)
    budget = 16 * len(bank)
    plain = simulate(bank, make_allocator("early_stop"), budget_samples=budget, seeds=3)
    verified_allocator = make_allocator("early_stop", use_greedy=True, verifier_weight=1.0)
    verified = simulate(bank, verified_allocator, budget_samples=budget, seeds=3)
    # plain settles on the copied "19"; weighted, "-12" wins once drawn, and a probe that agrees on
    # "19" does not settle: the verifier doubts it (1 - exp(-5) > EARLY_STOP_DOUBT)
    assert plain.accuracy < 0.2 and verified.accuracy > 0.9
    assert verified.samples_per_question < 8  # it still stops early
    ungated = simulate(bank, replace(verified_allocator, stop_doubt=None), budget_samples=budget, seeds=3)
    assert ungated.accuracy < verified.accuracy - 0.2 and ungated.tokens < verified.tokens


def test_record_bank_can_score_answers_as_it_records() -> None:
    from budgetflow.evaluate.bank import record_bank
    from budgetflow.types import SamplingParams

    def reply(request: Request, index: int) -> str:
        return "Answer: 19" if request.sampling.temperature == 0 else "Answer: -12"

    backend = _ScoringFunctionBackend(reply)
    (entry,) = asyncio.run(
        record_bank(_dataset(), backend, k=3, sampling=SamplingParams(), temperature=0.5, verify=True)
    )
    assert entry.greedy is not None and entry.greedy.verifier_score == -6.0
    assert [s.verifier_score for s in entry.samples] == [-0.5, -0.5, -0.5]
    with pytest.raises(ConfigError, match="needs a backend that scores text"):
        asyncio.run(
            record_bank(
                _dataset(),
                FunctionBackend(reply),
                k=1,
                sampling=SamplingParams(),
                temperature=0.5,
                verify=True,
            )
        )


def test_live_scoring_follows_its_own_questions_request_so_the_prompt_is_still_cached() -> None:
    from budgetflow.evaluate.allocated import run_allocated
    from budgetflow.types import SamplingParams

    calls: list[tuple[str, str]] = []

    class Logging(_ScoringFunctionBackend):
        async def complete(self, request: Request) -> Response:
            calls.append(("sample", request.messages[0].text))
            await asyncio.sleep(0.001)  # let other questions' draws interleave if they can
            return await super().complete(request)

        async def score_continuations(self, request: Request, continuations: Sequence[str]) -> list[float]:
            calls.append(("score", request.messages[0].text))
            return await super().score_continuations(request, continuations)

    questions = tuple(
        Question(id=f"q{i}", text=f"{i} - 4", gold="-12", messages=(Message("user", f"Q: {i} - 4\nA:"),))
        for i in range(6)
    )
    dataset = Dataset(name="six", questions=questions, grader=MatchGrader(), statement=ARITHMETIC_STATEMENT)
    backend = Logging(lambda request, index: f"Answer: {(request.sampling.seed or 0) % 4}")
    allocator = make_allocator("online", use_greedy=True, verifier_weight=1.0)
    asyncio.run(
        run_allocated(dataset, backend, allocator, budget_samples=24, sampling=SamplingParams(seed=3))
    )
    scored_after = [calls[i - 1] for i, (kind, _) in enumerate(calls) if kind == "score"]
    assert scored_after and all(kind == "sample" for kind, _ in scored_after)
    assert all(calls[i - 1][1] == text for i, (kind, text) in enumerate(calls) if kind == "score")
