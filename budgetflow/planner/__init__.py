"""An LLM planner: decomposes a task into a plan that runs while it is being written.

`run_task` asks the model for a plan, one node per line, and starts each node the moment its
line arrives and its dependencies are done (LLMCompiler's task-fetching unit, without polling);
lines that fail validation are fed back with the errors for a bounded number of repairs; after
a failure (or a node answering `REPLAN`) it re-plans when the budget left covers the estimated
cost, at most `max_replans` times. A node with `strategy: plan` is planned recursively.
"""

from budgetflow.planner.planner import Planner, TaskResult, run_task
from budgetflow.planner.writer import PlanWriter, WrittenPlan

__all__ = ["PlanWriter", "Planner", "TaskResult", "WrittenPlan", "run_task"]
