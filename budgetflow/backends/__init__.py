"""Backends produce completions; wrappers add retry, rate limits, caching and metering around them."""

from budgetflow.backends.base import Backend
from budgetflow.backends.openai import OpenAICompatibleBackend
from budgetflow.backends.scripted import FunctionBackend, ScriptedBackend

__all__ = ["Backend", "EmbeddedBackend", "FunctionBackend", "OpenAICompatibleBackend", "ScriptedBackend"]


def __getattr__(name: str) -> object:
    # The embedded backend imports llama.cpp bindings; load them only when asked for.
    if name == "EmbeddedBackend":
        from budgetflow.backends.embedded import EmbeddedBackend

        return EmbeddedBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
