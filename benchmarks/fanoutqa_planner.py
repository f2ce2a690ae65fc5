"""FanOutQA decomposition benchmark: a planner's decompositions scored against the dev set's
gold sub-question trees (`budgetflow.evaluate.fanoutqa.decomposition_score`, 0-1).

Planners: `gold` (the gold decomposition itself: 1.0 by construction), `scrambled` (gold words
shuffled across sub-questions, dependencies rewired: a floor), and `model`: budgetflow's LLM
planner (the prompt `budgetflow/prompts/planner.txt`, lines validated as plan nodes, invalid
lines repaired as `run_task` does) on the embedded model or an OpenAI-compatible endpoint; only
the plan is written and scored, its nodes are not run.

    python benchmarks/fanoutqa_planner.py --limit 20                       # embedded model
    python benchmarks/fanoutqa_planner.py --base-url http://127.0.0.1:8000/v1 --model M

Last stdout line: {"questions": …, "gold": 1.0, "scrambled": …, "model": …, "valid_plans": …}
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys

from budgetflow.evaluate.fanoutqa import (
    FanOutQuestion,
    decomposition_score,
    load_fanoutqa_dev,
    scrambled_decomposition,
    sub_questions_of_plan,
)
from budgetflow.planner import Planner
from budgetflow.planner.writer import PlanWriter, planner_prompt
from budgetflow.plans.model import Node
from budgetflow.runtime.context import RunContext
from budgetflow.runtime.endpoints import EndpointSpec, open_backend
from budgetflow.types import SamplingParams


async def model_decompositions(
    questions: list[FanOutQuestion], spec: EndpointSpec, max_tokens: int
) -> list[list[Node]]:
    planner = Planner(max_tokens=max_tokens)
    found: list[list[Node]] = []
    async with open_backend(spec) as backend:
        for index, question in enumerate(questions):
            context = RunContext(backend, seed=0)
            queue: asyncio.Queue[Node | None] = asyncio.Queue()
            writer = PlanWriter(
                context,
                planner.template,
                queue,
                sampling=SamplingParams(max_tokens=max_tokens, temperature=0.0, seed=0),
                max_repairs=planner.max_repairs,
                max_nodes=planner.max_nodes,
                unit_base=10_000_000 + index,
            )
            written = await writer.write(planner_prompt(question.question, planner.template))
            found.append(written.accepted)
            print(
                f"  {index + 1}/{len(questions)}: {len(written.accepted)} nodes, "
                f"{len(written.rejected)} rejected",
                file=sys.stderr,
            )
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument("--base-url")
    parser.add_argument("--model")
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--no-model", action="store_true", help="score gold and scrambled only")
    args = parser.parse_args()
    questions = load_fanoutqa_dev()[: args.limit]
    rng = random.Random(0)
    gold = [decomposition_score(q.decomposition, q.decomposition) for q in questions]
    floor = [
        decomposition_score(scrambled_decomposition(q.decomposition, rng), q.decomposition) for q in questions
    ]
    row = {"questions": len(questions), "gold": sum(gold) / len(gold), "scrambled": sum(floor) / len(floor)}
    if not args.no_model:
        spec = (
            EndpointSpec(kind="openai", base_url=args.base_url, model=args.model)
            if args.base_url
            else EndpointSpec(kind="embedded")
        )
        plans = asyncio.run(model_decompositions(questions, spec, args.max_tokens))
        scores = [
            decomposition_score(sub_questions_of_plan(p), q.decomposition)
            for p, q in zip(plans, questions, strict=True)
        ]
        row |= {
            "model": sum(scores) / len(scores),
            "valid_plans": sum(bool(p) for p in plans),
            "endpoint": args.base_url or "embedded",
        }
    print(f"{'planner':<10} {'score':>6}")
    for name in ("gold", "scrambled", "model"):
        if name in row:
            print(f"{name:<10} {row[name]:>6.3f}")
    print(json.dumps(row))


if __name__ == "__main__":
    main()
