"""budgetflow: turn a fixed inference budget into the most correct answers."""

from budgetflow.backends import Backend, FunctionBackend, OpenAICompatibleBackend, ScriptedBackend
from budgetflow.errors import BudgetflowError
from budgetflow.runtime.strategy_runner import run_strategy
from budgetflow.strategies import Single, Vote
from budgetflow.types import (
    AudioPart,
    Completion,
    ImagePart,
    Message,
    Question,
    Request,
    Response,
    SamplingParams,
    TextPart,
    Usage,
    VideoPart,
)

__version__ = "0.1.0"

__all__ = [
    "AudioPart",
    "Backend",
    "BudgetflowError",
    "Completion",
    "FunctionBackend",
    "ImagePart",
    "Message",
    "OpenAICompatibleBackend",
    "Question",
    "Request",
    "Response",
    "SamplingParams",
    "ScriptedBackend",
    "Single",
    "TextPart",
    "Usage",
    "VideoPart",
    "Vote",
    "__version__",
    "run_strategy",
]
