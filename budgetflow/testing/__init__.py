"""Test helpers shipped in the package: a local OpenAI-compatible stub server with fault injection."""

from budgetflow.testing.stub_server import Fault, StubOpenAIServer

__all__ = ["Fault", "StubOpenAIServer"]
