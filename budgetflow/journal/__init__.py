"""The run journal (SQLite by default, PostgreSQL for shared deployments): see `store`."""

from budgetflow.journal.database import describe, is_postgres
from budgetflow.journal.records import RecordedStep, redact, request_hash
from budgetflow.journal.store import Journal

__all__ = ["Journal", "RecordedStep", "describe", "is_postgres", "redact", "request_hash"]
