"""Tools for agent nodes and the tool-calling loop that uses them.

`Calculator` (safe arithmetic, no `eval`), `PythonRunner` (a separate process with time, CPU and
memory limits and no network) and `DocumentSearch` (BM25 over the user's documents) are tools;
`run_agent` runs one unit's tool loop with a tool-call budget, showing the model what is left of
its budget every turn.
"""

from budgetflow.tools.agent import AgentOptions, AgentOutcome, ToolUse, budget_line, run_agent
from budgetflow.tools.library import Calculator, DocumentSearch, Passage, Tool, ToolSpec, tool_error
from budgetflow.tools.python_runner import PythonRunner

__all__ = [
    "AgentOptions",
    "AgentOutcome",
    "Calculator",
    "DocumentSearch",
    "Passage",
    "PythonRunner",
    "Tool",
    "ToolSpec",
    "ToolUse",
    "budget_line",
    "default_tools",
    "run_agent",
    "tool_error",
]


def default_tools() -> dict[str, Tool]:
    """The tools every run has without configuration: the calculator and the Python runner
    (document search needs the user's documents: `DocumentSearch.from_directory`)."""
    return {"calculator": Calculator(), "python": PythonRunner()}
