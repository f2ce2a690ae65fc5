"""The LLM planner on the embedded model: it writes a plan for a task, one JSON node per line,
and each node starts as soon as its line is written.

    python examples/planner_task.py ["What is (2 + 3) * (4 + 1)?"]

SmolLM2-135M is tiny: whether its plan is a good decomposition is not the point here (see
benchmarks/fanoutqa_planner.py for that on a real endpoint); what runs is the real machinery —
streaming dispatch, validation, repair of rejected lines, budget-gated re-planning — printed as
the plan's nodes, the planner's decisions and what everything cost.
"""

from __future__ import annotations

import asyncio
import sys

from budgetflow.planner import Planner, TaskResult, run_task
from budgetflow.runtime.endpoints import EndpointSpec, open_backend
from budgetflow.types import SamplingParams


async def plan_and_run(task: str, budget_tokens: int = 4000) -> TaskResult:
    async with open_backend(EndpointSpec(kind="embedded")) as backend:
        return await run_task(
            task,
            backend,
            planner=Planner(max_tokens=160, max_repairs=1, max_replans=1),
            budget_tokens=budget_tokens,
            sampling=SamplingParams(max_tokens=32, temperature=0.0, seed=0),
        )


def main() -> None:
    task = sys.argv[1] if len(sys.argv) > 1 else "What is (2 + 3) * (4 + 1)?"
    result = asyncio.run(plan_and_run(task))
    for number, (written, plan) in enumerate(result.attempts, start=1):
        print(
            f"attempt {number}: {len(written.accepted)} nodes accepted, {len(written.rejected)} lines "
            f"rejected, {written.repairs} repairs, streamed={written.streamed}"
        )
        for node in written.accepted:
            outcome = plan.nodes[node.id]
            print(
                f"  {node.id}: {node.prompt!r} after {list(node.dependencies)} -> {outcome.status} {outcome.value!r}"
            )
        for line in written.rejected:
            print(f"  rejected: {line[:100]}")
    print("decisions:", "; ".join(result.decisions))
    print(f"answer: {result.answer!r}; spent {result.spent.total_tokens:,} tokens of 4,000")


if __name__ == "__main__":
    main()
