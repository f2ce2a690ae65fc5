"""Plans: task graphs whose nodes are units of the execution core.

A plan is a DAG of nodes (`model`), written in Python or YAML/JSON (`loader`), checked before
anything runs (`validate`), and run by a dataflow scheduler (`executor`): every node starts the
moment its inputs are ready, the longest remaining critical path first, each one a unit of one
`RunContext` (its budget share, its strategy, its events), with run-time fan-out (`map`) and
fan-in policies (`all`, `first`, `quorum`).
"""

from budgetflow.plans.executor import run_plan
from budgetflow.plans.loader import load_plan, plan_from_dict
from budgetflow.plans.model import FanIn, Limits, Node, Plan, Role
from budgetflow.plans.results import NodeResult, PlanResult
from budgetflow.plans.validate import PlanError, validate_plan

__all__ = [
    "FanIn",
    "Limits",
    "Node",
    "NodeResult",
    "Plan",
    "PlanError",
    "PlanResult",
    "Role",
    "load_plan",
    "plan_from_dict",
    "run_plan",
    "validate_plan",
]
