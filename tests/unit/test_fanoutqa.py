"""The FanOutQA decomposition scorer on the dev set's gold trees: gold scores 1.0, a scrambled
decomposition scores lower, and a plan's nodes are scored as sub-questions."""

from __future__ import annotations

import random

from budgetflow.evaluate.fanoutqa import (
    SubQuestion,
    decomposition_score,
    load_fanoutqa_dev,
    scrambled_decomposition,
    sub_questions_of_plan,
)
from budgetflow.plans import plan_from_dict


def test_the_gold_decompositions_score_one_and_scrambled_ones_lower() -> None:
    dev = load_fanoutqa_dev()
    assert len(dev) == 310 and all(q.decomposition for q in dev)
    rng = random.Random(0)
    gold_scores = [decomposition_score(q.decomposition, q.decomposition) for q in dev]
    scrambled = [
        decomposition_score(scrambled_decomposition(q.decomposition, rng), q.decomposition) for q in dev
    ]
    assert min(gold_scores) == 1.0
    assert sum(scrambled) / len(scrambled) < 0.6
    assert all(s < 1.0 for s in scrambled)
    assert decomposition_score([], dev[0].decomposition) == 0.0


def test_a_plan_with_the_right_sub_questions_but_no_dependencies_loses_the_edge_half() -> None:
    question = next(q for q in load_fanoutqa_dev() if any(s.depends_on for s in q.decomposition))
    flat = [SubQuestion(s.id, s.question) for s in question.decomposition]
    assert decomposition_score(flat, question.decomposition) == 0.5
    nodes = [{"id": f"n{i}", "prompt": s.question} for i, s in enumerate(question.decomposition)]
    plan = plan_from_dict({"nodes": nodes})
    assert decomposition_score(sub_questions_of_plan(plan.nodes), question.decomposition) == 0.5
