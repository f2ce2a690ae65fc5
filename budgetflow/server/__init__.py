"""budgetflow's OpenAI-compatible server: strategies by model name, honest usage, keys with budgets."""

from budgetflow.server.app import ServerSettings, create_app
from budgetflow.server.keys import KeyStore

__all__ = ["KeyStore", "ServerSettings", "create_app"]
